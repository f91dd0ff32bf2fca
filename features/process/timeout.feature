@m0 @model_tiny @q4_k_m
Feature: A job that runs past the inference timeout ends with INFERENCE_TIMEOUT
  The optional flag --inference-timeout-sec (M0-W-1101, a MAY) bounds how long a job may run. A job that runs
  past it ends with an SSE error event carrying the stable code INFERENCE_TIMEOUT (M0-W-1500, M0-W-1510).
  A worker that does not declare the optional flags (--worker-flag optional_flags="...") is not applicable,
  and so is a job that ends by itself within the timeout.

  @M0-W-1101 @M0-W-1500 @M0-W-1510
  Scenario: A job running past an inference timeout of 1 second ends with INFERENCE_TIMEOUT
    Given a worker serving the tiny qwen2 Q4_K_M model started with the optional flags of M0-W-1101 and an inference timeout of 1 second
    When I POST /execute with the JSON body, reading its events for at most 30 seconds:
      """
      {"job_id": "{job_id}", "prompt": "Count from one to one thousand", "max_tokens": 2048, "temperature": 0.0}
      """
    Then the job, running past its timeout of 1 second, ends with an error event with code INFERENCE_TIMEOUT
