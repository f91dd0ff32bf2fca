@model_tiny @q4_k_m @needs_spawn
Feature: Shut down on SIGTERM
  SIGTERM stops the worker cleanly: it logs `shutdown` and exits with code 0 (M0-W-1340, whose
  /shutdown endpoint is M1; ERRATA E-11). M0 allows up to 30 seconds; from M1 the pool manager sends
  SIGKILL after 5 seconds (M0-W-1630).

  Background:
    Given a worker serving the tiny qwen2 Q4_K_M model

  @m0 @M0-W-1340
  Scenario: SIGTERM ends the worker with exit code 0 within 30 seconds
    When I send SIGTERM to the worker
    Then the worker exits with code 0 within 30 seconds
    And the last log event is shutdown

  # Under load: the job that is streaming when SIGTERM arrives is closed with one terminal event (end, or an
  # error such as CANCELLED) before the worker exits; a stream cut off without one fails.
  @m0 @M0-W-1340
  Scenario: SIGTERM during a job closes its stream with a terminal event, then exits with code 0
    Given a job with prompt "Count from one to one thousand" and max_tokens 2048 is streaming tokens
    When I send SIGTERM to the worker
    Then the job's stream ends with one terminal event within 30 seconds
    And the worker exits with code 0 within 30 seconds

  @m1 @M0-W-1630
  Scenario: SIGTERM ends the worker within 5 seconds
    When I send SIGTERM to the worker
    Then the worker exits with code 0 within 5 seconds
    And the last log event is shutdown
