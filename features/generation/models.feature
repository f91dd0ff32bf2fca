@m0
Feature: Every reference model generates on the adapter its file calls for
  A worker loads one model and picks the adapter from the file's general.architecture (qwen2, phi3 and
  llama on the Llama-family path, gpt2 on the GPT-2-style path, gpt-oss on the GPT-OSS path; ERRATA
  E-01, E-02). Whatever the model, a job streams started, its tokens and end, in valid UTF-8.
  Without --model-dir the reference roles are synthetic stand-ins of the same architecture, vocabulary
  and tensor-type mix: their text is noise, but the stream must still be well-formed.

  Scenario Outline: The <role> model streams a well-formed job
    Given a worker serving the <role> model
    When I run a job with:
      | field       | value                             |
      | prompt      | Write a haiku about GPU computing |
      | max_tokens  | 8                                 |
      | temperature | 0.7                               |
      | seed        | 42                                |
    Then every run finishes with an end event
    And every run streams at least 1 token
    And every run's text is valid UTF-8, with characters split across tokens rejoined

    @M0-W-1230 @M0-W-1214 @M0-W-1420 @M0-W-1310 @M0-W-1311 @M0-W-1824 @model_qwen @q4_k_m
    Examples: Qwen2.5 on the Llama-family adapter
      | role                          |
      | Qwen2.5-0.5B-Instruct Q4_K_M  |

    @M0-W-1230 @M0-W-1214 @M0-W-1310 @M0-W-1311 @M0-W-1824 @model_phi3 @q4_k_m
    Examples: Phi-3 on the Llama-family adapter (fused QKV and gate-up)
      | role                          |
      | Phi-3-mini-4k-instruct Q4_K_M |

    @M0-W-1230 @M0-W-1823 @M0-W-1310 @M0-W-1311 @M0-W-1824 @model_gpt_oss @mxfp4
    Examples: GPT-OSS on its own adapter (MoE with MXFP4 experts)
      | role             |
      | gpt-oss-20b MXFP4 |

    @M0-W-1215 @model_gpt2 @f32
    Examples: a GPT-2-style file on the GPT adapter
      | role          |
      | tiny gpt2 F32 |

    @M0-W-1214 @model_smollm2 @q4_1
    Examples: SmolLM2 (architecture llama), a small real model
      | role                        |
      | SmolLM2-135M-Instruct Q4_1  |

    @M0-W-1214 @model_qwen @q4_k_m @real_qwen
    Examples: Qwen2.5-Coder-0.5B (architecture qwen2), real weights of the Qwen2.5-0.5B shape
      | role                               |
      | Qwen2.5-Coder-0.5B-Instruct Q4_K_M |

  Scenario Outline: The adapter follows the file's architecture, as /health shows
    Given a worker serving the <role> model
    Then /health reports the architecture of the model file

    @M0-W-1213 @model_qwen @q4_k_m @gate_llama_phi3
    Examples: qwen2
      | role                         |
      | Qwen2.5-0.5B-Instruct Q4_K_M |

    @M0-W-1213 @model_phi3 @q4_k_m
    Examples: phi3
      | role                          |
      | Phi-3-mini-4k-instruct Q4_K_M |

    @M0-W-1213 @model_gpt_oss @mxfp4
    Examples: gpt-oss
      | role              |
      | gpt-oss-20b MXFP4 |

    @M0-W-1213 @model_gpt2 @f32
    Examples: gpt2
      | role          |
      | tiny gpt2 F32 |
