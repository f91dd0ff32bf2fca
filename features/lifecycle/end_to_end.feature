@m0 @M0-W-1820 @needs_spawn
Feature: End to end: start, one inference, a reproducible stream, device memory, a clean shutdown
  The spec's end-to-end test (M0-W-1820), once per reference model: a worker is started for the scenario,
  runs one inference whose stream is well-formed, gives the same tokens again at temperature 0, reports
  the model resident with its tensors in device memory (VRAM-only), and on SIGTERM logs `shutdown` and
  exits with code 0. Without --model-dir the roles are synthetic stand-ins of the same architecture and
  vocabulary: their text is noise, but every step above must still hold.

  Scenario Outline: End to end on the <role> model
    Given a freshly started worker serving the <role> model
    When I run a job with:
      | field       | value                             |
      | prompt      | Write a haiku about GPU computing |
      | max_tokens  | 8                                 |
      | temperature | 0.0                               |
    And I run the same job again
    Then every run finishes with an end event
    And every run streams at least 1 token
    And every run streams the same tokens as the first
    And /health reports the model resident and the worker healthy
    When I GET /health
    Then vram_bytes_used holds the model's tensors in their stored types
    When I send SIGTERM to the worker
    Then the worker exits with code 0 within 30 seconds
    And the last log event is shutdown

    @model_qwen @q4_k_m
    Examples: Qwen2.5
      | role                         |
      | Qwen2.5-0.5B-Instruct Q4_K_M |

    @model_phi3 @q4_k_m
    Examples: Phi-3
      | role                          |
      | Phi-3-mini-4k-instruct Q4_K_M |

    @model_gpt_oss @mxfp4
    Examples: GPT-OSS
      | role              |
      | gpt-oss-20b MXFP4 |
