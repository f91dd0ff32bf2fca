@m0 @model_tiny @q4_k_m @needs_spawn
Feature: Check the command line before anything else
  The worker takes its identity, model, device and port on the command line. Every value is checked;
  a bad or missing one ends the process before it serves, with a non-zero exit code and a one-line error
  naming the flag, never a traceback (M0-W-1100, ERRATA E-26): the spec fixes exit code 1 for
  initialisation and load failures, not for usage errors, which many CLI libraries end with code 2.
  A busy port is found before the model is loaded.

  Background:
    Given the model file of the tiny qwen2 Q4_K_M model

  @M0-W-1100
  Scenario Outline: A bad <flag> value is refused before serving
    When the worker is started with <flag> set to <value>
    Then the worker exits with a non-zero code within 60 seconds
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

  @M0-W-1100
  Scenario Outline: A missing <flag> is refused before serving
    When the worker is started without <flag>
    Then the worker exits with a non-zero code within 60 seconds
    And the error output names the flag <flag>
    And the worker printed no traceback

    Examples:
      | flag         |
      | --worker-id  |
      | --model      |
      | --gpu-device |
      | --port       |

  # M0-W-1101 is a MAY: a worker that has the optional flags declares them with
  # --worker-flag optional_flags="..."; for any other worker the scenario is not applicable.
  @M0-W-1101
  Scenario: The optional flags are accepted
    Given a worker serving the tiny qwen2 Q4_K_M model started with the optional flags of M0-W-1101
    When I GET /health
    Then the response status is 200
    When I execute a job with prompt "Hello" and max_tokens 4
    Then the job finishes with an end event
