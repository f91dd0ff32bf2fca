@m0 @model_tiny @q4_k_m
Feature: The model stays resident in device memory
  Weights, KV cache and intermediates live in device memory, with no fallback to host memory
  (M0-SYS-2.2.1). The worker serves one model for its lifetime and never reloads or swaps it
  (M0-W-1001, M0-W-1002): /health reports it resident, healthy and unchanged across requests and time.
  A failed residency check makes the worker say so (M0-W-1012): that needs a fault hook of the worker.

  @M0-SYS-2.2.1 @M0-W-1002 @M0-W-1001 @gate_gpt_basic
  Scenario: The model stays resident across requests and over time
    Given a worker serving the tiny qwen2 Q4_K_M model
    When jobs run while I sample /health every 0.5 seconds for 3 seconds
    Then every /health sample shows the model resident and the worker healthy
    And every /health sample describes the same model

  @M0-W-1012 @needs_spawn
  Scenario: A failed residency check marks the worker unhealthy
    Given a worker serving the tiny qwen2 Q4_K_M model with a residency failure injected
    Then within 30 seconds /health reports status unhealthy and resident false
    And the log has a critical error about residency
