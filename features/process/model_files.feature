@m0 @model_tiny @q4_k_m @needs_spawn
Feature: Refuse a model file that cannot be served
  Before anything is loaded the worker checks the model file: readable, GGUF magic, version 3, fewer
  than 10,000 tensors, known tensor types, the keys its architecture needs, and an architecture it has
  an adapter for. A bad file ends the process with exit code 1, within a minute, and an error that
  names the file and the problem (M0-W-1200, M0-W-1210, M0-W-1211, M0-W-1212; ERRATA E-01, E-16).
  The bad files are made from a fixture model while the scenario runs.

  Background:
    Given the model file of the tiny qwen2 Q4_K_M model

  @M0-W-1200 @M0-W-1210 @gate_gpt_mxfp4
  Scenario: A file that is not GGUF is refused
    When the worker is started on a text file named model.gguf
    Then the worker exits with code 1 within 60 seconds
    And a line of the error output names the model file and the problem: not a GGUF file
    And the worker printed no traceback

  @M0-W-1200 @M0-W-1210 @gate_gpt_mxfp4
  Scenario Outline: A GGUF file <change> is refused
    When the worker is started on a copy of the model <change>
    Then the worker exits with code 1 within 60 seconds
    And a line of the error output names the model file and the problem: <problem>
    And the worker printed no traceback

    Examples:
      | change                                   | problem                |
      | with the magic number GGUX               | not a GGUF file        |
      | with GGUF version 2                      | the GGUF version       |
      | with 10000 tensors                       | too many tensors       |
      | with an unknown tensor type              | an unknown tensor type |
      | cut off in the middle of its tensor data | the file is cut short  |

  @M0-W-1211 @gate_gpt_mxfp4
  Scenario Outline: A GGUF file without <key> is refused
    When the worker is started on a copy of the model without the key <key>
    Then the worker exits with code 1 within 60 seconds
    And a line of the error output names the model file and the problem: the missing key <key>
    And the worker printed no traceback

    Examples:
      | key                    |
      | qwen2.context_length   |
      | qwen2.embedding_length |
      | qwen2.block_count      |

  @M0-W-1212 @gate_llama_phi3 @gate_gpt_mxfp4
  Scenario Outline: A model of the unsupported architecture <architecture> is refused
    When the worker is started on a copy of the model with general.architecture set to <architecture>
    Then the worker exits with code 1 within 60 seconds
    And a line of the error output names the model file and the problem: the architecture <architecture>
    And the worker printed no traceback

    Examples:
      | architecture |
      | mamba        |
      | gemma3       |
