@m0 @model_any
Feature: Report the worker's state on GET /health
  /health tells a client whether the worker is healthy and what it serves: whether the model is
  resident, its quantization, the memory it uses, its tokenizer, vocabulary size and context length.
  A worker serving its model reports it resident and itself healthy.

  Background:
    Given a worker serving any model

  @M0-W-1320 @M0-W-1364
  Scenario: /health answers with the required fields and their types, and the model resident
    When I GET /health
    Then the response status is 200
    And the health body has the fields:
      | field           | type                     |
      | status          | one of healthy, unhealthy |
      | resident        | boolean                  |
      | quant_kind      | string                   |
      | vram_bytes_used | integer                  |
      | tokenizer_kind  | one of gguf-bpe, hf-json |
      | vocab_size      | integer                  |
      | context_length  | integer or null          |
    And /health reports the model resident and the worker healthy

  @M0-W-1320 @M0-W-1364
  Scenario: /health describes the model file the worker serves
    When I GET /health
    Then the health body describes the model file the worker serves
