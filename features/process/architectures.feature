@m0 @model_tiny
Feature: Pick the model adapter from the file's architecture
  The adapter is chosen from `general.architecture`, never from the file name: llama, qwen2 and phi3
  run on the Llama-family path, gpt2 on the GPT-2-style path, gpt-oss on the GPT-OSS path (M0-W-1212,
  ERRATA E-01, E-02). Each is accepted, reports the file it serves and runs a job. Whether /health names
  the architecture (an optional field, ERRATA E-10) is judged in generation/models.feature.

  @M0-W-1212 @gate_llama_phi3 @gate_gpt_mxfp4 @needs_spawn
  Scenario Outline: A <architecture> model is accepted
    Given a worker serving the tiny <architecture> <type> model
    When I GET /health
    Then the response status is 200
    And the health body describes the model file the worker serves
    When I execute a job with prompt "Hello" and max_tokens 4
    Then the job finishes with an end event

    @q4_k_m
    Examples: Llama-family and GPT-2-style models
      | architecture | type   |
      | llama        | Q4_K_M |
      | qwen2        | Q4_K_M |
      | phi3         | Q4_K_M |
      | gpt2         | Q4_K_M |

    @mxfp4
    Examples: GPT-OSS
      | architecture | type      |
      | gpt-oss      | MXFP4_MOE |
