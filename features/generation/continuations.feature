@m0 @model_tiny @f32
Feature: Greedy continuations equal llama.cpp's on every architecture
  An end-to-end oracle over HTTP: for each architecture the worker supports, the greedy continuation of a
  fixed prompt on a tiny F32 file equals the one llama.cpp computes on the same file
  (fixtures/goldens/continuations/, made by `python -m fixtures.continuations`). The goldens keep only
  steps where the best token leads the runner-up by a wide margin and whose text is valid UTF-8, so any
  correct implementation streams the same text. This proves the adapter chosen from the file's
  architecture (M0-W-1213) and its kernels (RoPE, RMSNorm, grouped-query attention, SwiGLU: M0-W-1214,
  M0-W-1430; GPT-OSS experts and sinks: M0-W-1230) through observable behaviour. The real-vocabulary
  files add the real Qwen2 and Phi-3 vocabularies.

  Scenario Outline: <name> continues the golden prompt as llama.cpp does
    Given a worker serving the <role> model
    When I run the golden prompt of "<name>" greedily
    Then the streamed text equals the golden continuation

    @M0-W-1213 @M0-W-1214 @M0-W-1430
    Examples: Llama family
      | name           | role           |
      | tiny-llama-f32 | tiny llama F32 |
      | tiny-qwen2-f32 | tiny qwen2 F32 |
      | tiny-phi3-f32  | tiny phi3 F32  |

    @M0-W-1213 @M0-W-1230 @gate_gpt_mxfp4
    Examples: GPT-OSS
      | name             | role             |
      | tiny-gpt-oss-f32 | tiny gpt-oss F32 |
