@m0
Feature: The same request gives the same tokens on the same device
  For tests, the same model, prompt, parameters and seed give the same output on one device
  (M0-SYS-2.3.1, M0-W-1826): at temperature 0 by definition (greedy), and at a temperature above 0
  because the sampler's random numbers come from the request's seed. The kernels must be deterministic
  for this to hold (M0-W-1031). Token texts are compared: the stream carries no token ids.

  Scenario Outline: Greedy decoding on <role> repeats itself exactly
    Given a worker serving the <role> model
    When I run a job with:
      | field       | value                         |
      | prompt      | The capital of France is      |
      | max_tokens  | 16                            |
      | temperature | 0.0                           |
      | seed        | 42                            |
    And I run the same job 2 more times
    Then every run finishes with an end event
    And every run streams the same tokens as the first

    @M0-SYS-2.3.1 @M0-W-1826 @M0-W-1031 @model_qwen @q4_k_m @gate_m0_5
    Examples: Qwen
      | role                         |
      | Qwen2.5-0.5B-Instruct Q4_K_M |

    @M0-SYS-2.3.1 @M0-W-1826 @M0-W-1031 @model_phi3 @q4_k_m
    Examples: Phi-3
      | role                          |
      | Phi-3-mini-4k-instruct Q4_K_M |

    @M0-SYS-2.3.1 @M0-W-1826 @M0-W-1031 @model_gpt_oss @mxfp4
    Examples: GPT-OSS
      | role              |
      | gpt-oss-20b MXFP4 |

    @M0-SYS-2.3.1 @M0-W-1826 @model_gpt2 @f32
    Examples: GPT-2 style
      | role          |
      | tiny gpt2 F32 |

    @M0-SYS-2.3.1 @M0-W-1826 @M0-W-1031 @model_smollm2 @q4_1
    Examples: SmolLM2, real weights
      | role                       |
      | SmolLM2-135M-Instruct Q4_1 |

    @M0-SYS-2.3.1 @M0-W-1826 @M0-W-1031 @model_qwen @q4_k_m @real_qwen
    Examples: Qwen2.5-Coder-0.5B, real weights of the Qwen2.5-0.5B shape
      | role                               |
      | Qwen2.5-Coder-0.5B-Instruct Q4_K_M |

  @M0-SYS-2.3.1 @M0-W-1826 @M0-W-1030 @model_any @gate_m0_5
  Scenario: Sampling at temperature 0.7 with a fixed seed repeats itself exactly
    Given a worker serving any model
    When I run a job with:
      | field       | value                             |
      | prompt      | Write a haiku about GPU computing |
      | max_tokens  | 16                                |
      | temperature | 0.7                               |
      | seed        | 42                                |
    And I run the same job again
    Then every run finishes with an end event
    And every run streams the same tokens as the first
