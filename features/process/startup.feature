@m0 @model_tiny @q4_k_m @needs_spawn
Feature: Start, load one model and become ready
  The worker is a self-contained process: it loads exactly one model from disk into device memory,
  then serves /execute, /health and /cancel and logs "ready" with its worker id and the device memory it
  holds (M0-SYS-6.3.1, M0-W-1110). Process start to ready SHOULD take at most 60 seconds (M0-W-1120);
  the measured time is reported as the scenario's `start_to_ready_s`.

  Background:
    Given a worker serving the tiny qwen2 Q4_K_M model

  @M0-W-1110 @M0-SYS-6.3.1 @M0-W-1001
  Scenario: The ready worker serves /health, /execute and /cancel
    When I GET /health
    Then the response status is 200
    When I execute a job with prompt "Hello" and max_tokens 4
    Then the job finishes with an end event
    When I cancel a job that does not exist
    Then every cancel request is answered 202

  @M0-W-1110 @M0-SYS-6.3.1
  Scenario: The worker logs ready with its worker id and device memory, after loading the model
    Then the log has a ready event with the worker id and vram_bytes
    And the log has the events startup, model_load_start, model_load_complete, ready in this order

  @M0-W-1120 @gate_gpt_basic
  Scenario: The worker is ready within 60 seconds of its start
    Then the start-to-ready time is reported and is at most 60 seconds
