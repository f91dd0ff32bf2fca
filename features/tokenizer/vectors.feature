@m0
Feature: The worker's tokenizer matches the conformance vectors
  Each reference model's tokenizer must reproduce its conformance vectors (M0-W-1363; GPT-OSS:
  M0-W-1821): {text, expected_token_ids, expected_decoded, description}, 20-30 per tokenizer, computed
  by llama.cpp (Qwen2, Phi-3) and tiktoken (o200k_harmony) and stored in fixtures/vectors/. Token ids
  never appear on the wire, so the worker's own self-check command runs them: it loads the tokenizer
  exactly as the worker does for the model file and reports one verdict per vector (encode, decode and
  UTF-8-safe streaming decode). A worker that declares no self-check command is not applicable here.

  Scenario Outline: The <role> tokenizer reproduces the <vectors> vectors
    Given a worker serving the <role> model
    When I run the worker's self-check "tokenizer-vectors" with the "<vectors>" vectors
    Then the self-check passes every case

    @M0-W-1363 @M0-W-1362 @M0-W-1360 @model_qwen @q4_k_m
    Examples: Qwen2 byte-level BPE from the GGUF vocabulary
      | role                         | vectors |
      | Qwen2.5-0.5B-Instruct Q4_K_M | qwen2   |

    @M0-W-1363 @M0-W-1362 @M0-W-1360 @model_phi3 @q4_k_m
    Examples: Phi-3 SentencePiece from the GGUF vocabulary
      | role                          | vectors |
      | Phi-3-mini-4k-instruct Q4_K_M | phi3    |

    @M0-W-1363 @M0-W-1361 @M0-W-1821 @M0-W-1360 @model_gpt_oss @mxfp4 @gate_llama_kernels
    Examples: GPT-OSS o200k_harmony from tokenizer.json
      | role              | vectors       |
      | gpt-oss-20b MXFP4 | o200k_harmony |
