@model_smollm2 @q4_1
Feature: Generation is a prefill and then one step per token, measured and unchanged on the wire
  The InferenceEngine seam keeps the HTTP layer apart from generation (M0-SEAM-ENGINE), and M0.5 turns
  generation into a prefill followed by one decode step per token (M05-STEP) with no change to the HTTP
  API. On the wire that means tokens are streamed as they are produced: their events arrive spread over
  the decode, not all at once after it (the original worker generated everything first and replayed the
  events). First-token and per-token times are measured (M0-SEAM-TIMING): end.decode_time_ms is a real
  duration. The M0 behaviour is unchanged: the same ordered stream and reproducible tokens (M0-W-1311,
  M0-W-1826). SmolLM2 is used because its steps take long enough to tell streaming from replay.

  Background:
    Given a worker serving the SmolLM2-135M-Instruct Q4_1 model
    When I run a job with:
      | field       | value                    |
      | prompt      | The three primary colors |
      | max_tokens  | 12                       |
      | temperature | 0.0                      |

  @m0_5 @M05-STEP @M0-SEAM-ENGINE @gate_m0_complete
  Scenario: Token events arrive one by one as the steps produce them
    Then every run finishes with an end event
    And the tokens of every run arrive one by one, not all at once

  @m0 @M0-SEAM-TIMING @gate_m0_complete
  Scenario: The decode time is measured
    Then end.decode_time_ms of every run is positive and within the time the job took

  @m0_5 @M0-W-1311 @M0-W-1826
  Scenario: The stream and the tokens are those of M0
    When I run the same job again
    Then every run finishes with an end event
    And every run streams the same tokens as the first
