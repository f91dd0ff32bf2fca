@m0 @M0-W-1824
Feature: Streamed text is valid UTF-8 for CJK, emoji and mixed scripts
  The spec's UTF-8 streaming test (M0-W-1824): prompts "你好世界", "Hello 👋 World 🌍" and
  "Mixed: 日本語 English العربية", max_tokens 20, temperature 0.7. Every token event is valid UTF-8
  JSON, never half a character. On real weights the concatenated texts also hold no U+FFFD: a character
  split across tokens is held back until it is complete, never sent in halves or replaced. The
  real-vocabulary stand-ins have the models' own vocabularies, so their random tokens split multi-byte
  characters often; their random weights also emit byte sequences that are invalid in themselves, which a
  worker may replace with U+FFFD or drop (ERRATA E-28).

  Scenario Outline: The spec's prompts stream valid UTF-8 on <role>
    Given a worker serving the <role> model
    When I run a job with:
      | field       | value                          |
      | prompt      | 你好世界                       |
      | max_tokens  | 20                             |
      | temperature | 0.7                            |
      | seed        | 42                             |
    And I run the same job with prompt set to "Hello 👋 World 🌍"
    And I run the same job with prompt set to "Mixed: 日本語 English العربية"
    Then every run finishes with an end event
    And every run's text is valid UTF-8, with characters split across tokens rejoined

    @model_qwen @q4_k_m
    Examples: Qwen vocabulary (byte-level BPE)
      | role                         |
      | Qwen2.5-0.5B-Instruct Q4_K_M |

    @model_phi3 @q4_k_m
    Examples: Phi-3 vocabulary (SentencePiece with byte fallback)
      | role                          |
      | Phi-3-mini-4k-instruct Q4_K_M |

    @model_gpt_oss @mxfp4
    Examples: GPT-OSS vocabulary (o200k_harmony, tokenizer.json)
      | role              |
      | gpt-oss-20b MXFP4 |

    @model_smollm2 @q4_1
    Examples: SmolLM2, real weights
      | role                       |
      | SmolLM2-135M-Instruct Q4_1 |

    @model_qwen @q4_k_m @real_qwen
    Examples: Qwen2.5-Coder-0.5B, real weights of the Qwen2.5-0.5B shape
      | role                               |
      | Qwen2.5-Coder-0.5B-Instruct Q4_K_M |
