@model_any
Feature: Metrics hooks and the Prometheus endpoint
  M0.5 adds named hook points (request start, first token, each token, end, error) that do nothing by
  default (M05-HOOKS); M1 wires them to GET /metrics in the Prometheus text format (M1-METRICS,
  M0-W-1350) with worker_vram_bytes, worker_requests_total{outcome}, worker_tokens_generated_total,
  worker_inference_duration_ms and worker_uptime_seconds. The hooks can only be seen through /metrics:
  without it their scenario is not applicable. These are M1 checks: a worker without /metrics fails them,
  in the M1 gate only; judged as an M0 worker (`--milestone M0`) the failure does not fail the run.

  Background:
    Given a worker serving any model

  @m1 @M1-METRICS @M0-W-1350
  Scenario: /metrics serves the M0-W-1350 metrics in the Prometheus text format
    When I scrape /metrics
    Then /metrics serves Prometheus text with the metrics:
      | metric                        |
      | worker_vram_bytes             |
      | worker_requests_total         |
      | worker_tokens_generated_total |
      | worker_inference_duration_ms  |
      | worker_uptime_seconds         |

  @m1 @M1-METRICS @M0-W-1350
  Scenario: A job moves the request and token counters
    When I scrape /metrics
    And I run a job with:
      | field       | value       |
      | prompt      | Hello world |
      | max_tokens  | 6           |
      | temperature | 0.0         |
    And I scrape /metrics
    Then worker_requests_total grew by 1 between the scrapes
    And worker_tokens_generated_total grew by the tokens the job streamed

  @m0_5 @M05-HOOKS
  Scenario: The hooks of a job fire: request, tokens and end
    When I scrape /metrics
    And I run a job with:
      | field       | value       |
      | prompt      | Hello world |
      | max_tokens  | 6           |
      | temperature | 0.0         |
    And I scrape /metrics
    Then the metrics hooks of the job show on /metrics
