@m0 @model_tiny @q4_k_m @needs_spawn
Feature: Structured logs
  The worker logs one JSON object per line. Each line names its `event` and carries the worker's
  context (worker_id, model_ref, gpu_device); lines about a job carry its job_id (M0-W-1900). Loading
  reports progress at 0, 25, 50, 75 and 100 percent (M0-W-1621). Logging prompts is allowed in M0
  (redaction, M0-W-1902, is M1).

  @M0-W-1900
  Scenario: Startup and a job are logged with their event names and context
    Given a worker serving the tiny qwen2 Q4_K_M model
    When I execute a job with prompt "Hello" and max_tokens 4
    Then the job finishes with an end event
    And the log has the events startup, model_load_start, model_load_progress, model_load_complete, ready, execute_start, execute_end in this order
    And the job's execute_start and execute_end log events carry its job_id
    And every log event carries the worker's context: worker_id, model_ref, gpu_device

  @M0-W-1621
  Scenario: Model loading reports its progress
    Given a worker serving the tiny qwen2 Q4_K_M model
    Then the log has model_load_progress events at 0, 25, 50, 75, 100 percent, in this order

  @M0-W-1900 @M0-W-1111 @gate_gpt_basic
  Scenario: A load failure is logged as an error event with the worker's context
    Given the model file of the tiny qwen2 Q4_K_M model
    When the worker is started on a copy of the model with GGUF version 2
    Then the worker exits with code 1 within 60 seconds
    And the log has an error event
    And every log event carries the worker's context: worker_id, model_ref, gpu_device
