@m0 @model_gpt_oss @mxfp4
Feature: GPT-OSS comes up in MXFP4 and generates
  The large-model bring-up test (M0-W-1823): the worker serving GPT-OSS reports quant_kind "MXFP4",
  tokenizer_kind "hf-json" (its tokenizer.json sits next to the file), resident true, and device memory
  that holds the file's tensors in their stored types (within 20% plus a KV cache and scratch allowance:
  no full-precision copy of the MXFP4 experts, M0-W-1201); then one basic inference runs. GPT-OSS is a
  mixture of experts with MXFP4 expert weights, not a GPT-2-style model (ERRATA E-02). Without --model-dir
  the stand-in is a tiny GPT-OSS with the real o200k_harmony tokenizer.json and MXFP4 experts.

  Background:
    Given a worker serving the gpt-oss-20b MXFP4 model

  @M0-W-1823 @M0-W-1230 @M0-W-1320
  Scenario: /health shows the MXFP4 model resident with its hf-json tokenizer
    Then /health reports quant_kind MXFP4
    And /health reports the tokenizer of the model file
    And /health reports the model resident and the worker healthy

  @M0-W-1823 @M0-W-1201 @M0-W-1435 @M0-W-1320
  Scenario: Device memory holds the MXFP4 weights as stored
    When I GET /health
    Then vram_bytes_used holds the model's tensors in their stored types
    And the health quant_kind is the file type of the model file

  @M0-W-1823 @M0-W-1230
  Scenario: One basic inference runs
    When I run a job with:
      | field       | value                             |
      | prompt      | Write a haiku about GPU computing |
      | max_tokens  | 8                                 |
      | temperature | 0.0                               |
    Then every run finishes with an end event
    And every run streams at least 1 token
