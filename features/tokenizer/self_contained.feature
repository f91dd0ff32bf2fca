@m0 @needs_spawn
Feature: Tokenization stays inside the worker
  Tokenization is self-contained: no Python, no external binaries, no FFI (M0-W-1365). What a client can
  see of it is that the worker runs no helper process to tokenize: while a job is tokenized, decoded and
  streamed, the worker has no child process. The harness samples the worker's child processes every
  20 ms, from before the job is sent until its stream has ended (a launcher such as `sh -c` that only
  runs the worker is looked through). The language and linkage of the tokenizer are not visible from
  outside and are not judged here.

  Scenario Outline: The worker runs a job on its <backend> tokenizer without a helper process
    Given a worker serving the <role> model
    When I execute a job with prompt "Hello, world! Tokenize me, please." and max_tokens 8, watching the worker's processes
    Then the job finishes with an end event
    And the worker started no other process

    @M0-W-1365 @model_qwen @q4_k_m
    Examples: gguf-bpe
      | role                         | backend  |
      | Qwen2.5-0.5B-Instruct Q4_K_M | gguf-bpe |

    @M0-W-1365 @model_gpt_oss @mxfp4
    Examples: hf-json
      | role              | backend |
      | gpt-oss-20b MXFP4 | hf-json |
