@m0 @model_tiny @q4_k_m
Feature: One inference at a time
  An M0 worker runs one job at a time (batch 1, M0-W-1301). A second job sent while one streams is either
  refused with a retriable error (HTTP 503, or a stream holding only a retriable error event) or waits and
  starts after the first has ended; it never generates alongside it. This is judged by the arrival times of
  the two streams: none of the second job's tokens arrives before the first job's closing event.

  @M0-W-1301
  Scenario: A second job sent while one streams is refused or waits its turn
    Given a worker serving the tiny qwen2 Q4_K_M model
    And a first job with prompt "Once upon a time" and max_tokens 256 is streaming tokens
    When a second job with prompt "Hello" and max_tokens 4 is sent
    Then the second job was refused as busy or ran only after the first had ended

  # Each prompt runs alone first (greedy, so its tokens are fixed), then all are sent at once: a client
  # gets its job's whole stream with the same tokens (never cut short, never mixed with another job's), or
  # the busy refusal.
  @M0-W-1301 @M0-W-1311
  Scenario: Clients sending jobs at once each get their own whole stream or a busy refusal
    Given a worker serving the tiny qwen2 Q4_K_M model
    When 4 greedy jobs with prompts of their own and max_tokens 16 are run one after another
    And the same jobs are sent by as many clients at once
    Then each client got its job's whole stream, with the tokens of its run alone, or a busy refusal
