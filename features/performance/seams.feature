Feature: Implementations behind the seams can be swapped without changing the output
  M0 leaves clean seams for later milestones (performance bundle): the KV cache comes from a
  KVCacheAllocator and attention runs behind an AttentionKernel, so a paged cache (M1-PAGED-KV) and a
  fused attention kernel (M1-FLASH-ATTN) plug in without touching the rest. The outside view of a seam is
  a worker flag that swaps the implementation, and the same greedy tokens with and without it. The flags
  are worker-specific: `--worker-flag kv_cache_paged=ARGS`, `--worker-flag attention_sdpa=ARGS` (the
  reference worker's, `--kv-cache paged` and `--attention sdpa`, are built in); a worker that declares
  none is not applicable. The M1 scenarios generate past several cache pages and sample with a seed.
  The decode loop itself stays pure (M0-SEAM-PURE-LOOP): nothing is logged per token, so a 64-token job
  adds no more log lines than a 4-token one (visible only for workers the harness starts). That purity is
  what lets the decode step be captured as a CUDA graph and replayed per token (M1-CUDA-GRAPHS): the same
  job gives the same tokens with the step replayed as a graph (`--worker-flag cuda_graphs=ARGS`) and
  launched kernel by kernel (`--worker-flag eager_decode=ARGS`; the reference worker's `--cuda-graphs` and
  `--no-cuda-graphs`), on the GPU. That the step is a graph is the worker's own declaration: from outside,
  the same tokens are what can be judged.

  Background:
    Given a worker serving the tiny llama Q8_0 model

  @m0 @M0-SEAM-KV @model_tiny @q8_0 @needs_spawn
  Scenario: A second KV cache allocator gives the same greedy tokens
    When I run a job with:
      | field       | value       |
      | prompt      | Hello world |
      | max_tokens  | 16          |
      | temperature | 0.0         |
    And the same model is served with the worker flag kv_cache_paged
    And I run the same job again
    Then every run finishes with an end event
    And every run streams the same tokens as the first

  @m0 @M0-SEAM-ATTN @model_tiny @q8_0 @needs_spawn
  Scenario: A second attention kernel gives the same greedy tokens
    When I run a job with:
      | field       | value       |
      | prompt      | Hello world |
      | max_tokens  | 16          |
      | temperature | 0.0         |
    And the same model is served with the worker flag attention_sdpa
    And I run the same job again
    Then every run finishes with an end event
    And every run streams the same tokens as the first

  @m0 @M0-SEAM-PURE-LOOP @model_tiny @q8_0 @needs_spawn
  Scenario: The decode loop logs nothing per token
    When I run a greedy job with max_tokens 4 and count the log lines it adds
    And I run a greedy job with max_tokens 64 and count the log lines it adds
    Then both jobs added the same number of log lines

  @m1 @M1-PAGED-KV @model_tiny @q8_0 @needs_spawn
  Scenario: The paged KV cache gives the same tokens over a long generation
    When I run a job with:
      | field       | value                                                        |
      | prompt      | Once upon a time there was a GPU that computed all day long |
      | max_tokens  | 96                                                           |
      | temperature | 0.7                                                          |
      | seed        | 5                                                            |
    And the same model is served with the worker flag kv_cache_paged
    And I run the same job again
    Then every run finishes with an end event
    And every run streams the same tokens as the first

  @m1 @M1-FLASH-ATTN @model_tiny @q8_0 @needs_spawn
  Scenario: The fused attention kernel gives the same tokens over a long generation
    When I run a job with:
      | field       | value                                                        |
      | prompt      | Once upon a time there was a GPU that computed all day long |
      | max_tokens  | 96                                                           |
      | temperature | 0.7                                                          |
      | seed        | 5                                                            |
    And the same model is served with the worker flag attention_sdpa
    And I run the same job again
    Then every run finishes with an end event
    And every run streams the same tokens as the first

  @m1 @M1-CUDA-GRAPHS @model_tiny @q8_0 @needs_spawn @needs_gpu
  Scenario: The decode step replayed as a CUDA graph gives the same tokens as launched kernel by kernel
    When the same model is served with the worker flag cuda_graphs
    And I run a job with:
      | field       | value                                                        |
      | prompt      | Once upon a time there was a GPU that computed all day long |
      | max_tokens  | 96                                                           |
      | temperature | 0.7                                                          |
      | seed        | 5                                                            |
    And the same model is served with the worker flag eager_decode
    And I run the same job again
    Then every run finishes with an end event
    And every run streams the same tokens as the first
