@m1 @model_any
Feature: A client that drops its stream frees the worker
  A client may go away in the middle of a job. The worker notices the closed connection and stops the job
  (M0-W-1611 asks for it within 100 ms, an M1 item), so the next job is accepted soon after. Seen from the
  client: after the drop, a new job is accepted (its stream starts) within a few seconds. When the dropped
  job would have ended by itself within that time anyway, the scenario is not applicable.

  Background:
    Given a worker serving any model

  @M0-W-1611
  Scenario: A job whose client drops its stream stops, and a new job is accepted soon after
    Given a job with prompt "Count from one to one thousand" and max_tokens 2048 is streaming tokens
    When the client drops the job's stream
    And I send one-token jobs until one is accepted, for at most 5 seconds after the drop
    Then a new job was accepted within 5 seconds of the drop
