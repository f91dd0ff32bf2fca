@m0 @model_tiny @q4_k_m @needs_spawn
Feature: Workers side by side are isolated from each other
  Each worker is an OS process of its own, apart from whatever manages it (the harness here, pool-managerd
  from M1), with its own CUDA context; workers never share device memory (M0-SYS-6.3.2, M0-SYS-2.4.1,
  M0-SYS-2.4.2). The harness starts two workers side by side on one device: each answers on its own port
  from a process of its own, each holds a CUDA context of its own (on a GPU), and when one is killed in
  the middle of a job the other's job streams on to its end with the tokens it gives when run alone.
  Attached to a worker (--worker-url), the harness cannot start a second one: not applicable.

  Background:
    Given two workers serving the tiny qwen2 Q4_K_M model side by side on one device

  @M0-SYS-6.3.2 @M0-SYS-2.4.1 @M0-SYS-2.4.2
  Scenario: Each worker answers from a process of its own
    Then each worker's port is served by a process of its own, apart from the harness and the other worker

  @M0-SYS-6.3.2 @M0-SYS-2.4.2
  Scenario: Killing one worker in the middle of a job leaves the other's job whole
    When the second worker runs a greedy job with prompt "Once upon a time" and max_tokens 480 alone
    And both workers stream that job and the first is killed with SIGKILL
    Then the second worker's job ends with an end event and the tokens of its run alone
    And the second worker still answers GET /health

  @M0-SYS-6.3.2 @M0-SYS-2.4.2 @needs_gpu
  Scenario: Each worker holds a CUDA context of its own
    Then nvidia-smi lists a CUDA context for each worker's own processes
