@m1 @M1-PARITY-LLAMACPP @needs_gpu @needs_full_shape @timed
Feature: Decode at least as fast as llama.cpp on the same GPU and model file
  Competitive parity (performance bundle §M1): a worker decodes at least as fast as llama.cpp on the same
  GPU and the same GGUF file. llama.cpp's rate is llama-bench's tg128 (`llama-bench -m FILE -ngl 99 -fa 1
  -p 0 -n 128 -r 3 -o json`: 128 tokens from an empty context, every layer on the GPU, FlashAttention on,
  the mean of three runs), run by the harness on the file the worker is judged as and on the GPU the
  harness gives its workers, while the worker is idle. The llama-bench (a CUDA build) is named with
  `--llama-bench PATH`; without one, or when an attached worker may run on another machine, the scenario
  is not applicable. The worker's rate is measured from the client side: the median over 5 jobs of the
  tokens after the first per second from the first token to the last (up to 128 tokens), after one warm-up
  job. The jobs are greedy (temperature 0): llama-bench decodes without sampling, so a sampled job would
  time the worker's sampler against nothing of llama.cpp's. Both rates and their ratio are in the report. Timing needs the GPU and a
  full-shape file (the real one, or the random-weight file of `python -m fixtures prepare --shaped`).

  Scenario Outline: <role> decodes at least as fast as llama.cpp
    Given a worker serving the <role> model
    And one job with prompt "Hello" and max_tokens 2 has run
    When I run 5 greedy jobs with prompt "Write a long story about GPUs" and max_tokens 128
    And llama.cpp decodes 128 tokens of the same file on the same GPU
    Then the median decode rate is at least llama.cpp's

    @model_qwen @q4_k_m
    Examples: the spec's Qwen2.5 file
      | role                         |
      | Qwen2.5-0.5B-Instruct Q4_K_M |

    @model_phi3 @q4_k_m
    Examples: the spec's Phi-3 file
      | role                          |
      | Phi-3-mini-4k-instruct Q4_K_M |

    @model_gpt_oss @mxfp4
    Examples: the spec's GPT-OSS file
      | role              |
      | gpt-oss-20b MXFP4 |
