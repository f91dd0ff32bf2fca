@m1 @M0-W-1830 @M1-PERF-SUITE @timed
Feature: The worker meets the M1 performance targets
  The performance targets deferred from M0 (spec §10, performance bundle §M1), measured from the client
  side: first token within 100 ms (p95) and 10-50 ms between tokens (p95), a decode rate of at least 20
  tokens per second, /health within 10 ms (p99), a cancel or a client disconnect stopping the job within
  100 ms, the model ready within 60 seconds and shutdown within 5 seconds of SIGTERM, and no device
  memory lost over 100 requests. The speed targets are about a GPU and a full-size model: on a CPU-only
  machine, and on a tiny stand-in (which times nothing the targets are about), those scenarios are not
  applicable; they run on the real file or the full-shape random-weight file of
  `python -m fixtures prepare --shaped`, and the report names the file timed. /health is timed both
  idle and while a job generates: "from cached state" means a running job must not slow it down.
  Faster than 10 ms between tokens passes.

  @M0-W-1600 @M0-W-1602 @M0-W-1601 @needs_gpu @needs_full_shape @model_qwen @q4_k_m
  Scenario: First token, gap between tokens and decode rate
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    When I run 20 jobs with prompt "Write a haiku about GPU computing" and max_tokens 32
    Then the p95 time to the first token is below 100 ms
    And the p95 gap between tokens is at most 50 ms
    And the median decode rate is at least 20 tokens per second

  @M0-W-1604 @needs_gpu @needs_full_shape @model_qwen @q4_k_m
  Scenario: /health answers from cached state while the worker is idle
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    When I GET /health 200 times
    Then the p99 /health latency is below 10 ms

  @M0-W-1604 @needs_gpu @needs_full_shape @model_qwen @q4_k_m
  Scenario: /health answers from cached state while the worker generates
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    And a job with prompt "Write a long story about GPUs" and max_tokens 2048 is streaming tokens
    When I GET /health 200 times while the job streams
    Then the p99 /health latency is below 10 ms

  @M0-W-1610 @needs_gpu @model_smollm2 @q4_1
  Scenario: A cancel stops the job within 100 ms
    Given a worker serving the SmolLM2-135M-Instruct Q4_1 model
    And a job with prompt "Write a long story about GPUs" and max_tokens 2048 is streaming tokens
    When I cancel the job and wait for its stream to end
    Then the stream ended within 100 ms of the cancel

  @M0-W-1611 @needs_gpu @model_smollm2 @q4_1
  Scenario: A client disconnect aborts the job within 100 ms
    Given a worker serving the SmolLM2-135M-Instruct Q4_1 model
    And a job with prompt "Write a long story about GPUs" and max_tokens 2048 is streaming tokens
    When I drop the connection of the streaming job and start a new job
    Then the new job started within 100 ms of the disconnect

  @M0-W-1620 @gate_gpt_basic @needs_gpu @needs_spawn @needs_full_shape @model_qwen @q4_k_m
  Scenario: The model loads within 60 seconds
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    Then the worker became ready within 60 seconds of its start

  @M0-W-1630 @needs_spawn @model_tiny @q8_0
  Scenario: The worker shuts down within 5 seconds of SIGTERM
    Given a worker serving the tiny llama Q8_0 model
    When I send SIGTERM to the worker
    Then the worker exits within 5 seconds

  @model_qwen @q4_k_m
  Scenario: 100 requests leave no device memory behind
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    # A worker may build what a prompt's shape needs once and keep it (a prefill graph, its cache): the
    # first job runs before the count, so only memory left behind by every job fails the check.
    And one job with prompt "Hello" and max_tokens 2 has run
    And I note the worker's vram_bytes_used
    When I run 100 jobs with prompt "Hello" and max_tokens 2
    Then vram_bytes_used is what it was before the jobs
