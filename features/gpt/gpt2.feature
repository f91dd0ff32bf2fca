@m0 @model_gpt2 @f32
Feature: The GPT-2-style path computes what llama.cpp computes
  The spec's GPT adapter (M0-W-1215) is GPT-2 style: learned absolute position embeddings added to the
  token embeddings (M0-W-1434), LayerNorm with epsilon 1e-5, scale and bias (M0-W-1432), tanh-approximated
  GELU (M0-W-1433), multi-head attention and a tied or separate output head. Kernels cannot be seen over
  HTTP, but their composition can: the greedy continuation of a fixed prompt on a tiny gpt2 F32 file must
  equal the one llama.cpp computes on the same file. The golden (fixtures/goldens/continuations/, made by
  `python -m fixtures.continuations`) keeps only steps where the best token leads the runner-up by a wide
  margin, so any correct implementation picks the same tokens; its text is valid UTF-8.

  @M0-W-1215 @M0-W-1432 @M0-W-1433 @M0-W-1434
  Scenario: Greedy continuation on a GPT-2-style file equals llama.cpp's
    Given a worker serving the tiny gpt2 F32 model
    When I run the golden prompt of "tiny-gpt2-f32" greedily
    Then the streamed text equals the golden continuation

  @M0-W-1215
  Scenario Outline: The GPT-2-style path runs on <type> weights
    Given a worker serving the tiny gpt2 <type> model
    When I run a job with:
      | field       | value       |
      | prompt      | Hello world |
      | max_tokens  | 8           |
      | temperature | 0.0         |
    Then every run finishes with an end event
    And every run's text is valid UTF-8, with characters split across tokens rejoined

    Examples:
      | type   |
      | Q8_0   |
      | Q4_K_M |
