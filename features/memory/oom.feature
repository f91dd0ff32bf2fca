@m0 @needs_spawn
Feature: Running out of device memory
  A job whose KV cache cannot be allocated ends with an SSE error VRAM_OOM after `started`; the
  worker frees what the job held and keeps serving, so the next job works (M0-W-1021, M0-W-1825,
  M0-W-1220). A model whose weights do not fit ends the process at startup with exit code 1 and an
  error giving the required and available bytes, the GPU id and the model path (M0-W-1020, M0-W-1111).
  Both need a device-memory budget the worker declares (--worker-flag memory_budget=...), so they run
  on CPU and on any GPU.

  @M0-W-1021 @M0-W-1825 @M0-W-1220 @model_tiny @q4_k_m @gate_gpt_basic @gate_llama_qwen
  Scenario: A job whose KV cache does not fit gets VRAM_OOM and the worker keeps serving
    Given a worker serving the tiny qwen2 Q4_K_M model with a device-memory budget of its tensor bytes rounded up to a whole MiB
    When I execute a job with prompt "Hello" and max_tokens 2048
    Then the job ends with a retriable error event with code VRAM_OOM after started
    And the worker process is still running
    When I execute a job with prompt "Hello" and max_tokens 4
    Then the job finishes with an end event

  @M0-W-1020 @M0-W-1111 @M0-W-1220 @model_qwen @q4_k_m @gate_gpt_basic
  Scenario: Weights that do not fit end the worker at startup with exit code 1
    Given the model file of the Qwen2.5-0.5B-Instruct Q4_K_M model
    When the worker is started with a device-memory budget of half its tensor bytes
    Then the worker exits with code 1 within 60 seconds
    And the error output gives the required and available bytes, the GPU id and the model path
    And the worker printed no traceback
