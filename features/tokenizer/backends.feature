@m0
Feature: The tokenizer backend is chosen from the model and reported on /health
  When the model loads, the worker picks its tokenizer backend (M0-W-1360): hf-json when a
  tokenizer.json ships next to the model (GPT-OSS, M0-W-1361), else gguf-bpe built from the vocabulary
  in the GGUF file (Qwen, Phi-3: M0-W-1362; Phi-3's vocabulary is SentencePiece-style, ERRATA E-03).
  /health reports the backend as tokenizer_kind and the vocabulary size as vocab_size (M0-W-1364), which
  must equal the file's own: the number of tokens in tokenizer.ggml.tokens, or the tokenizer.json
  vocabulary with its added tokens (ERRATA E-05), both read here with gguf-py and json.

  Scenario Outline: /health reports the tokenizer of the <role> file
    Given a worker serving the <role> model
    Then /health reports the tokenizer of the model file

    @M0-W-1360 @M0-W-1362 @M0-W-1364 @model_qwen @q4_k_m
    Examples: gguf-bpe, byte-level BPE
      | role                         |
      | Qwen2.5-0.5B-Instruct Q4_K_M |

    @M0-W-1360 @M0-W-1362 @M0-W-1364 @model_phi3 @q4_k_m
    Examples: gguf-bpe, SentencePiece-style
      | role                          |
      | Phi-3-mini-4k-instruct Q4_K_M |

    @M0-W-1360 @M0-W-1361 @M0-W-1364 @model_gpt_oss @mxfp4
    Examples: hf-json, a tokenizer.json next to the model
      | role              |
      | gpt-oss-20b MXFP4 |

    @M0-W-1360 @M0-W-1364 @model_smollm2 @q4_1
    Examples: gguf-bpe of a real llama-architecture file
      | role                       |
      | SmolLM2-135M-Instruct Q4_1 |

    @M0-W-1360 @M0-W-1364 @model_qwen @q4_k_m @real_qwen
    Examples: gguf-bpe of a real qwen2-architecture file
      | role                               |
      | Qwen2.5-Coder-0.5B-Instruct Q4_K_M |
