@m0_5 @M05-BENCH
Feature: Baseline benchmarks are recorded
  M0.5 records a baseline before M1 optimises anything (M05-BENCH): first-token latency, per-token
  latency, tokens per second and model load time, measured by the benchmark suite in benchmarks/ and
  kept as a JSON record with the fields first_token_ms, per_token_ms, tokens_per_s and load_s. This
  repository's record is checked for the reference worker; another worker keeps its baseline in its own
  repository (not applicable).

  Scenario: A baseline record with the four measures exists
    Then a baseline benchmark record lists first-token latency, per-token latency, tokens per second and load time
