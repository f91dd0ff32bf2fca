@m0
Feature: Cancel a running job with POST /cancel
  A client can stop a job it no longer needs. The worker accepts the request at once (202), stops
  generating, and closes the job's stream with an "error" event whose code is CANCELLED, within 5
  seconds. Asking twice is harmless, and the worker serves the next job normally. On real weights each
  decode step does a real model's work, so the cancel arrives while the job is mid-stream at a real
  model's pace. A model may answer the prompt briefly and stop by itself (EOS): such a job is drawn again
  with another seed, up to three jobs, and a scenario whose every job stopped by itself before the cancel
  is not applicable, never failed.

  @M0-W-1330 @M0-SYS-6.3.5 @model_any
  Scenario: Cancelling a running job ends its stream with error CANCELLED
    Given a worker serving any model
    And a job with prompt "Count from one to one thousand" and max_tokens 2048 is streaming tokens
    When I cancel the job
    Then every cancel request is answered 202
    And the stream ends with an error event with code CANCELLED within 5 seconds
    And the events are in the order started, token*, terminal

  @M0-W-1330 @M0-SYS-6.3.5 @model_any
  Scenario: Cancelling twice is harmless
    Given a worker serving any model
    And a job with prompt "Count from one to one thousand" and max_tokens 2048 is streaming tokens
    When I cancel the job
    And I cancel the job again
    Then every cancel request is answered 202
    And the stream ends with an error event with code CANCELLED within 5 seconds
    And the stream has exactly one terminal event

  @M0-W-1330 @M0-SYS-6.3.5 @model_any
  Scenario: The worker serves the next job after a cancellation
    Given a worker serving any model
    And a job with prompt "Count from one to one thousand" and max_tokens 2048 is streaming tokens
    When I cancel the job
    Then the stream ends with an error event with code CANCELLED within 5 seconds
    When I execute a job with prompt "Hello" and max_tokens 4
    Then the job finishes with an end event

  @M0-W-1330 @M0-SYS-6.3.5 @needs_real_weights
  Scenario Outline: A job cancelled mid-stream on <role> ends with error CANCELLED, and the next job runs
    Given a worker serving the <role> model
    And a job with prompt "Count from one to one thousand" and max_tokens 2048 is streaming tokens
    When I cancel the job
    Then every cancel request is answered 202
    And the stream ends with an error event with code CANCELLED within 5 seconds
    And the events are in the order started, token*, terminal
    When I execute a job with prompt "Hello" and max_tokens 4
    Then the job finishes with an end event

    @model_smollm2 @q4_1
    Examples: a small real model
      | role                       |
      | SmolLM2-135M-Instruct Q4_1 |

    @model_qwen @q4_k_m @real_qwen
    Examples: a real sibling of the spec's Qwen file
      | role                               |
      | Qwen2.5-Coder-0.5B-Instruct Q4_K_M |
