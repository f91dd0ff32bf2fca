@m0 @model_gpt_oss @mxfp4
Feature: MXFP4 arithmetic matches a float reference
  The MXFP4 micro-goldens (M0-W-1822): a dequantize-then-GEMM (prefill and decode shapes) and a small
  attention with MXFP4 projections, computed through the worker's own kernels, must match float64
  reference outputs within 1e-2 relative (ERRATA E-24), with the MXFP4 weights used as stored
  (M0-W-1435). Kernels are inside the worker, so its self-check command runs the goldens
  (fixtures/goldens/mxfp4/) on the device the worker uses and reports one verdict per case.

  @M0-W-1822 @M0-W-1435
  Scenario: The MXFP4 micro-goldens pass on the worker's device
    Given a worker serving the gpt-oss-20b MXFP4 model
    When I run the worker's self-check "mxfp4-goldens"
    Then the self-check passes every case
