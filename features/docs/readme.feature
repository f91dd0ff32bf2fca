@m0
Feature: The worker's README says which models were verified reproducible
  Engines and GPUs can be non-deterministic and results across GPUs are not guaranteed; the worker's README
  says so and lists the models verified reproducible (M0-W-1040). The harness reads the README named with
  --worker-readme PATH (the project's README.md when it spawns the reference worker); without one the
  scenario is not applicable. A model counts as named when the reproducibility section gives a model
  family (Qwen, Phi-3, GPT-OSS, Llama, SmolLM2, ...) or a .gguf file name.

  @M0-W-1040
  Scenario: The README lists the models verified reproducible, with the caveat about GPUs
    Given the worker's README
    Then a section of it on reproducibility names the models verified reproducible
    And that section says results are not guaranteed across GPUs
