@m0 @model_any
Feature: Cancel a running job with POST /cancel
  A client can stop a job it no longer needs. The worker accepts the request at once (202), stops
  generating, and closes the job's stream with an "error" event whose code is CANCELLED, within 5
  seconds. Asking twice is harmless, and the worker serves the next job normally.

  Background:
    Given a worker serving any model

  @M0-W-1330 @M0-SYS-6.3.5 @gate_foundation_w4 @gate_m0_complete
  Scenario: Cancelling a running job ends its stream with error CANCELLED
    Given a job with prompt "Count from one to one thousand" and max_tokens 2048 is streaming tokens
    When I cancel the job
    Then every cancel request is answered 202
    And the stream ends with an error event with code CANCELLED within 5 seconds
    And the events are in the order started, token*, terminal

  @M0-W-1330 @M0-SYS-6.3.5 @gate_foundation_w4 @gate_m0_complete
  Scenario: Cancelling twice is harmless
    Given a job with prompt "Count from one to one thousand" and max_tokens 2048 is streaming tokens
    When I cancel the job
    And I cancel the job again
    Then every cancel request is answered 202
    And the stream ends with an error event with code CANCELLED within 5 seconds
    And the stream has exactly one terminal event

  @M0-W-1330 @M0-SYS-6.3.5 @gate_foundation_w4 @gate_m0_complete
  Scenario: The worker serves the next job after a cancellation
    Given a job with prompt "Count from one to one thousand" and max_tokens 2048 is streaming tokens
    When I cancel the job
    Then the stream ends with an error event with code CANCELLED within 5 seconds
    When I execute a job with prompt "Hello" and max_tokens 4
    Then the job finishes with an end event
