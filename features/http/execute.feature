@m0 @model_any
Feature: Run a job through POST /execute
  A client sends a job as JSON to /execute. The worker answers with a stream of server-sent events:
  first "started", then one "token" event per generated token, then one closing event.
  Only job_id and prompt are required; every other field has a default.

  Background:
    Given a worker serving any model

  @M0-W-1300
  Scenario: A job with every field set is answered with an event stream
    When I POST /execute with the JSON body:
      """
      {"job_id": "{job_id}", "prompt": "Write a haiku about GPU computing", "max_tokens": 8,
       "temperature": 0.7, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1, "stop": ["\n\n"], "seed": 42}
      """
    Then the response is an event stream
    And the job finishes with an end event
    And the job produced at most 8 tokens

  @M0-W-1300
  Scenario: A job with only job_id and prompt takes the defaults
    When I POST /execute with the JSON body, reading its events until the first token for at most 60 seconds:
      """
      {"job_id": "{job_id}", "prompt": "Hello"}
      """
    Then the response is an event stream
    And the job streams started and then tokens

  # The default max_tokens is 2048: the whole job can take minutes on a slow but correct worker. The job is
  # read for at most 90 seconds; a job still streaming then is not applicable, with the rate it showed
  # and the time the whole job would need.
  @M0-W-1300
  Scenario: A job without max_tokens ends by the default of 2048 tokens
    When I POST /execute with the JSON body, reading its events for at most 90 seconds:
      """
      {"job_id": "{job_id}", "prompt": "Hello"}
      """
    Then the job finishes with an end event within the time bound
    And the job produced at most 2048 tokens

  @M0-W-1300
  Scenario: Greedy sampling with a fixed seed is accepted
    When I POST /execute with the JSON body:
      """
      {"job_id": "{job_id}", "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0.0, "seed": 42}
      """
    Then the job finishes with an end event
    And the job produced at most 4 tokens
