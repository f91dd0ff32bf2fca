@m0
Feature: Device memory is accounted, and weights stay in their stored types
  /health reports the device bytes the worker holds (M0-W-1011). The weights are in device memory, so
  that number covers the file's tensor bytes; they stay quantized (M0-W-1201, ERRATA E-04, E-24), so it
  stays within the tensor bytes plus 20%, a full-context KV cache in FP32 and one step's intermediates:
  a full-precision copy of the weights does not fit. `quant_kind` is the file's `general.file_type`.

  @M0-W-1011 @M0-W-1201 @M0-SYS-2.2.1 @gate_gpt_basic @gate_gpt_mxfp4
  @needs_spawn
  Scenario Outline: Device memory holds the <model> weights in their stored types
    Given a worker serving the <model> model
    When I execute a job with prompt "Hello" and max_tokens 4
    And I GET /health
    Then the response status is 200
    And vram_bytes_used holds the model's tensors in their stored types
    And the health quant_kind is the file type of the model file

    @model_tiny @q4_k_m
    Examples: a tiny Q4_K_M model
      | model             |
      | tiny qwen2 Q4_K_M |

    @model_tiny @q8_0
    Examples: a tiny Q8_0 model
      | model           |
      | tiny qwen2 Q8_0 |

    @model_tiny @mxfp4
    Examples: a tiny MXFP4 model
      | model                  |
      | tiny gpt-oss MXFP4_MOE |

    @model_qwen @q4_k_m
    Examples: the Qwen2.5 reference model
      | model                        |
      | Qwen2.5-0.5B-Instruct Q4_K_M |
