@m0 @M0-W-1030 @model_any
Feature: A job without a seed gets one from the worker
  The sampler's random numbers come from a seed (M0-W-1030). When the request has none, the worker
  chooses one and returns it: the suite accepts a `seed` field on the started or the end event (ERRATA
  E-22). Sending that seed back with the same request must give the same tokens.

  Background:
    Given a worker serving any model

  Scenario: The seed the worker chose replays the job
    When I run a job with:
      | field       | value                |
      | prompt      | Tell me about GPUs   |
      | max_tokens  | 12                   |
      | temperature | 1.0                  |
    Then every run finishes with an end event
    And the worker reports the seed it chose
    When I run the same job with the seed the worker reported
    Then the last run streams the same tokens as the first
