@m0 @model_qwen @q4_k_m @needs_gpu @needs_spawn
Feature: The worker holds a CUDA context on its device for device-memory-only use, and releases it at exit
  The worker initialises a CUDA context on the device given by --gpu-device (M0-W-1400), for device memory
  only: the weights live in device memory, not in host memory (M0-W-1010). When it exits, its context is
  gone (M0-W-1401). Seen from outside: /health names the CUDA device where it reports one (`device`, `sm`
  and `cuda_runtime_version` are optional fields), and `nvidia-smi --query-compute-apps=pid,used_memory`
  lists the worker's process with at least the model's tensor bytes while it serves, and no process of it
  once it has exited. A CUDA context alone takes hundreds of MiB, so the memory check has teeth only for
  real model files (--model-dir). Without a GPU or nvidia-smi these scenarios are not applicable.

  @M0-W-1400 @M0-W-1010
  Scenario: The worker's CUDA context on its device holds the weights
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    When I execute a job with prompt "Hello" and max_tokens 4
    Then the job finishes with an end event
    And /health reports the CUDA device the worker was started on, where it reports a device
    And nvidia-smi lists the worker's process holding at least the model's tensor bytes

  @M0-W-1401
  Scenario: The CUDA context is released when the worker exits
    Given a freshly started worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    When I note the worker's processes that hold a CUDA context
    And I send SIGTERM to the worker
    Then the worker exits with code 0 within 30 seconds
    And within 5 seconds nvidia-smi lists none of those processes
