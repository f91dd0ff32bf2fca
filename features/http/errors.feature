@m0 @model_any
Feature: Errors carry stable codes
  When a job fails or is stopped, its stream ends with an "error" event. The event names one of the
  stable error codes, says in words what happened, and tells the client whether retrying may help.

  Background:
    Given a worker serving any model

  @M0-W-1500 @M0-W-1510
  Scenario: The error event of a cancelled job has a stable code, a message and a retriable flag
    Given a job with prompt "Count from one to one thousand" and max_tokens 2048 is streaming tokens
    When I cancel the job
    Then the stream ends with an error event with code CANCELLED within 5 seconds
    And every error event carries a stable code, a message and a retriable flag
