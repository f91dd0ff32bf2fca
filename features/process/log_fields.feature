@m1 @model_tiny @q4_k_m @needs_spawn
Feature: Performance fields and redaction in logs
  From M1 the job's `execute_end` log line carries its performance fields: tokens_in, tokens_out,
  decode_time_ms, first_token_ms and vram_bytes (M0-W-1901). Prompts and generated text are not logged
  raw: a job's log lines carry the SHA-256 and the length of its prompt instead (M0-W-1902). The prompt
  is distinctive, so any copy of it in the worker's output is a leak.

  @M0-W-1901
  Scenario: execute_end carries the job's performance fields
    Given a worker serving the tiny qwen2 Q4_K_M model
    When I execute a job with prompt "The secret word is PERIWINKLE-7731" and max_tokens 8
    Then the job finishes with an end event
    And the job's execute_end log event has the performance fields tokens_in, tokens_out, decode_time_ms, first_token_ms, vram_bytes

  @M0-W-1902
  Scenario: Neither the prompt nor the generated text is logged, only the prompt's hash and length
    Given a worker serving the tiny qwen2 Q4_K_M model
    When I execute a job with prompt "The secret word is PERIWINKLE-7731" and max_tokens 8
    Then the job finishes with an end event
    And no log line contains the job's prompt or its generated text
    And the job's execute_start log event carries the SHA-256 and the length of its prompt
