@m0 @needs_real_weights @M0-W-1800
Feature: The haiku test on real weights
  The spec's end-to-end check (M0-W-1800): "Write a haiku about GPU computing", max_tokens 50,
  temperature 0.7, seed 42. The stream has started, at least one token and end, a second run streams
  the same tokens, and, because the weights are real, the text is coherent.

  "Coherent" is a simple, honest test of the text, not of its poetry (the prompt is sent raw, without a
  chat template, as the spec's worker does). It passes when
    - at least 90% of the visible characters are printable ASCII (the prompt is English),
    - at least 3 distinct dictionary-like words of 3+ letters appear (letters only, a vowel, no letter
      three times in a row), and
    - it does not loop: no word, pair or triple of words occurs more than 4 times.
  Broken inference fails it: multilingual token soup, "Ġ"-marked byte-level pieces, one token repeated.
  It runs on SmolLM2-135M-Instruct (a real file shipped as a fixture); the reference models run with
  --model-dir, and their synthetic stand-ins are not applicable.

  Scenario Outline: The haiku prompt gives the same coherent text twice on <role>
    Given a worker serving the <role> model
    When I run a job with:
      | field       | value                             |
      | prompt      | Write a haiku about GPU computing |
      | max_tokens  | 50                                |
      | temperature | 0.7                               |
      | seed        | 42                                |
    And I run the same job again
    Then every run finishes with an end event
    And every run streams at least 1 token
    And every run streams the same tokens as the first
    And the text of every run is coherent English

    @model_smollm2 @q4_1
    Examples: a small real model
      | role                       |
      | SmolLM2-135M-Instruct Q4_1 |

    @model_qwen @q4_k_m @real_qwen
    Examples: a real sibling of the spec's Qwen file
      | role                               |
      | Qwen2.5-Coder-0.5B-Instruct Q4_K_M |

    @model_qwen @q4_k_m
    Examples: the spec's model
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
