@m0
Feature: Generation ends at a stop string or at max_tokens
  A job may name up to 4 stop strings (M0-W-1422). When the generated text contains one, generation
  ends with an end event and nothing after the stop string is streamed; whether the stop string itself is
  streamed is left open, as the spec does not say (ERRATA E-06). The stop string here is taken from a
  first greedy run's own output, around a token boundary, so the second greedy run must meet it, and
  usually across two tokens. A worker that reports end.stop_reason must say STOP_SEQUENCE. On real
  weights the text is real words, so the stop string is a piece of a sentence (on the real Qwen file
  " Paris. Paris is located in the northwestern part of France."), as a client would write one.
  max_tokens bounds the number of token events, and end.tokens_out counts them (M0-W-1300, M0-W-1312).

  @M0-W-1422 @model_any
  Scenario: A stop string taken from the greedy output ends the job where it first appears
    Given a worker serving any model
    When I run a job with:
      | field       | value       |
      | prompt      | Hello world |
      | max_tokens  | 24          |
      | temperature | 0.0         |
    And I run the same job with a stop string taken from its output
    Then the job stops where the stop string first appears

  @M0-W-1422 @needs_real_weights
  Scenario Outline: A stop string in real text ends the job where it first appears on <role>
    Given a worker serving the <role> model
    When I run a job with:
      | field       | value                    |
      | prompt      | The capital of France is |
      | max_tokens  | 12                       |
      | temperature | 0.0                      |
    And I run the same job with a stop string taken from its output
    Then the job stops where the stop string first appears

    @model_smollm2 @q4_1
    Examples: a small real model
      | role                       |
      | SmolLM2-135M-Instruct Q4_1 |

    @model_qwen @q4_k_m @real_qwen
    Examples: a real sibling of the spec's Qwen file
      | role                               |
      | Qwen2.5-Coder-0.5B-Instruct Q4_K_M |

  @M0-W-1300 @model_any
  Scenario Outline: max_tokens <max_tokens> bounds the tokens streamed
    Given a worker serving any model
    When I run a job with:
      | field       | value                             |
      | prompt      | Write a haiku about GPU computing |
      | max_tokens  | <max_tokens>                      |
      | temperature | 0.7                               |
      | seed        | 42                                |
    Then the job streams at most <max_tokens> tokens and says why it stopped

    Examples:
      | max_tokens |
      | 1          |
      | 5          |
      | 17         |
