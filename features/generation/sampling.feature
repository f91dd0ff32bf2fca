@m0 @model_qwen @q4_k_m
Feature: Temperature and the sampling filters change the tokens as the spec says
  Sampling (M0-W-1421): temperature, then repetition penalty over the prompt and generated tokens, then
  top-k, top-p and min-p, then greedy argmax at temperature 0 or a draw from the renormalized
  distribution. The defaults are temperature 1.0, top_p 1.0, top_k 0, repetition_penalty 1.0, min_p 0.0
  (M0-W-1420). min_p is not a field of the HTTP request (M0-W-1300), so it is not sent here. These scenarios make each setting observable with fixed seeds, so they are deterministic:
  a filter that keeps only the most likely token turns any temperature into greedy decoding, a strong
  repetition penalty changes a greedy output that repeats a token, and different seeds at temperature 1
  give different outputs.

  Background:
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    When I run a job with:
      | field       | value       |
      | prompt      | Hello world |
      | max_tokens  | 16          |
      | temperature | 0.0         |
      | seed        | 1           |

  @M0-W-1032
  Scenario Outline: Temperature <temperature> is accepted
    When I run the same job with temperature set to <temperature>
    Then every run finishes with an end event

    Examples:
      | temperature |
      | 0.0         |
      | 0.7         |
      | 1.0         |
      | 2.0         |

  @M0-W-1032 @M0-W-1421 @gate_gpt_basic
  Scenario: Temperature 0 is greedy: it equals top_k 1 at temperature 1.5
    When I run the same job with top_k set to 1 and temperature set to 1.5
    Then every run finishes with an end event
    And the last run streams the same tokens as the first

  @M0-W-1421 @gate_gpt_basic
  Scenario: A top_p close to 0 keeps only the most likely token (ERRATA E-13)
    When I run the same job with top_p set to 0.000001 and temperature set to 1.5
    Then every run finishes with an end event
    And the last run streams the same tokens as the first

  @M0-W-1421 @gate_gpt_basic
  Scenario: A strong repetition penalty changes a greedy output that repeats itself
    Then the first run repeats a token
    When I run the same job with repetition_penalty set to 2.0
    Then every run finishes with an end event
    And the last run streams different tokens from the first

  @M0-W-1421 @M0-W-1032 @gate_gpt_basic
  Scenario: Above temperature 0 the worker samples: different seeds give different tokens
    When I run the same job with temperature set to 1.0 and seed set to 1
    And I run the same job with temperature set to 1.0 and seed set to 2
    And I run the same job with temperature set to 1.0 and seed set to 3
    Then every run finishes with an end event
    And at least two of the sampled runs stream different tokens

  @M0-W-1420 @M0-W-1421 @gate_gpt_basic
  Scenario: Unset sampling fields take the spec's defaults
    When I run the same job with temperature set to 1.0 and top_p set to 1.0 and top_k set to 0 and repetition_penalty set to 1.0 and seed set to 7
    And I run the same job with temperature set to 1.0 and seed set to 7
    Then every run finishes with an end event
    And the last run streams the same tokens as run 2
