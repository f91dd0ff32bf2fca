@m0 @model_smollm2 @q4_1 @needs_real_weights
Feature: A job that runs past the inference timeout ends with INFERENCE_TIMEOUT
  The optional flag --inference-timeout-sec (M0-W-1101, a MAY) bounds how long a job may run. A job that runs
  past it ends with an SSE error event carrying the stable code INFERENCE_TIMEOUT (M0-W-1500, M0-W-1510).
  A worker that does not declare the optional flags (--worker-flag optional_flags="...") is not applicable.
  The job must outlast the timeout of 1 second: it runs on a real model (a tiny stand-in decodes its 2,048
  tokens within a second even on a CPU), sampled with the default temperature. A real model may answer the
  prompt briefly and stop by itself (EOS) within the second: such a job is drawn again with another seed, up
  to three jobs, and a scenario whose every job ended by itself within the timeout is not applicable, never
  failed.

  @M0-W-1101 @M0-W-1500 @M0-W-1510
  Scenario: A job running past an inference timeout of 1 second ends with INFERENCE_TIMEOUT
    Given a worker serving the SmolLM2-135M-Instruct Q4_1 model started with the optional flags of M0-W-1101 and an inference timeout of 1 second
    When I POST /execute with the JSON body, reading its events for at most 30 seconds, drawn again with another seed while it stops by itself within 1 second:
      """
      {"job_id": "{job_id}", "prompt": "Count from one to one thousand", "max_tokens": 2048}
      """
    Then the job, running past its timeout of 1 second, ends with an error event with code INFERENCE_TIMEOUT
