@m0 @model_qwen @q4_k_m @needs_spawn
Feature: The model is loaded in one pass: map, parse, allocate, copy, unmap
  Loading follows one flow (M0-W-1410): the file is mapped and its header and metadata parsed (a bad magic
  or a version other than 3 is refused: features/process/model_files.feature), device memory is allocated,
  the tensors are copied and the file is unmapped. From outside, the flow shows in the log: model_load_start,
  model_load_progress events whose percent (and, where reported, bytes copied) only grow up to the file's
  tensor bytes, model_load_complete, then ready; and in the model metadata /health reports. How the file is
  read (mmap, M0-W-1221) and the size of the copies (M0-W-1222) are not visible from outside: see their
  waivers in features/requirements.toml.

  @M0-W-1410
  Scenario: Loading the Qwen2.5 model is logged step by step and ends with its metadata on /health
    Given a worker serving the Qwen2.5-0.5B-Instruct Q4_K_M model
    Then the log has the events startup, model_load_start, model_load_progress, model_load_complete, ready in this order
    And the model_load_progress events count the bytes copied up to the total, where they report bytes
    When I GET /health
    Then the health body describes the model file the worker serves
