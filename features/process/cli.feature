@m0 @model_tiny @q4_k_m @needs_spawn
Feature: Check the command line before anything else
  The worker takes its identity, model, device and port on the command line. Every value is checked;
  a bad or missing one ends the process with exit code 1 and a one-line error naming the flag, never a
  traceback (M0-W-1100, ERRATA E-26). A busy port is found before the model is loaded.

  Background:
    Given the model file of the tiny qwen2 Q4_K_M model

  @M0-W-1100 @gate_foundation_w4
  Scenario Outline: A bad <flag> value is refused with exit code 1
    When the worker is started with <flag> set to <value>
    Then the worker exits with code 1 within 60 seconds
    And the error output names the flag <flag>
    And the worker printed no traceback

    Examples:
      | flag         | value                              |
      | --worker-id  | not-a-uuid                         |
      | --worker-id  | 12345                              |
      | --model      | a relative path to the model       |
      | --model      | a path that does not exist         |
      | --model      | a copy of the model named model.bin |
      | --gpu-device | 99                                 |
      | --gpu-device | -1                                 |
      | --port       | 1023                               |
      | --port       | 65536                              |
      | --port       | http                               |
      | --port       | a port that is in use              |

  @M0-W-1100 @gate_foundation_w4
  Scenario Outline: A missing <flag> is refused with exit code 1
    When the worker is started without <flag>
    Then the worker exits with code 1 within 60 seconds
    And the error output names the flag <flag>
    And the worker printed no traceback

    Examples:
      | flag         |
      | --worker-id  |
      | --model      |
      | --gpu-device |
      | --port       |

  @M0-W-1101
  Scenario: The optional flags are accepted
    Given a worker serving the tiny qwen2 Q4_K_M model started with "--max-tokens-in 256 --max-tokens-out 64 --inference-timeout-sec 120 --kv-cache-size-mb 16"
    When I GET /health
    Then the response status is 200
    When I execute a job with prompt "Hello" and max_tokens 4
    Then the job finishes with an end event
