@m0 @model_any
Feature: Refuse invalid jobs before any inference
  Every parameter of /execute is checked before the worker starts generating. A job that breaks a rule
  is refused with HTTP 400, and the answer says which field is wrong and which rule it broke.
  The "rule" column is the reference worker's wording; any worker may word the rule its own way.

  Background:
    Given a worker serving any model

  @M0-W-1302
  Scenario Outline: A job with a bad <field> is refused
    When I POST /execute with <field> set to <value>
    Then the error names the field <field> with the rule <rule>
    And no inference was started

    Examples: values out of range
      | field              | value                       | rule             |
      | job_id             | ""                          | non_empty        |
      | prompt             | ""                          | non_empty        |
      | max_tokens         | 0                           | range(1..=2048)  |
      | max_tokens         | 2049                        | range(1..=2048)  |
      | temperature        | -0.1                        | range(0.0..=2.0) |
      | temperature        | 2.5                         | range(0.0..=2.0) |
      | top_p              | 1.5                         | range(0.0..=1.0) |
      | top_k              | -1                          | range(0..=vocab) |
      | top_k              | 1000000000                  | range(0..=vocab) |
      | repetition_penalty | 2.5                         | range(0.0..=2.0) |
      | stop               | ["a", "b", "c", "d", "e"]   | max_count(4)     |
      | seed               | -1                          | range(0..=2^64-1) |

    Examples: values of the wrong type
      | field       | value     | rule |
      | job_id      | 42        | type |
      | prompt      | ["Hello"] | type |
      | max_tokens  | "ten"     | type |
      | max_tokens  | 4.5       | type |
      | temperature | "hot"     | type |
      | stop        | "STOP"    | type |

  @M0-W-1302
  Scenario Outline: A job without <field> is refused
    When I POST /execute without the field <field>
    Then the error names the field <field> with the rule required
    And no inference was started

    Examples:
      | field  |
      | job_id |
      | prompt |

  @M0-W-1302
  Scenario: A prompt longer than 32768 characters is refused
    When I POST /execute with a prompt of 32769 characters
    Then the error names the field prompt with the rule length(1..=32768)
    And no inference was started

  @M0-W-1302
  Scenario: A body that is not valid JSON is refused
    When I POST /execute with the raw body:
      """
      {"job_id": "broken", "prompt": "Hello",
      """
    Then the response status is 400
    And no inference was started

  @M0-W-1302
  Scenario: A JSON body that is not an object is refused
    When I POST /execute with the raw body:
      """
      ["job_id", "prompt"]
      """
    Then the response status is 400
    And no inference was started

  # A bounded sample drawn by hypothesis, the same bodies on every run (steps/bad_requests.py): wrong JSON
  # types, values out of range, empty and too long strings, missing required fields; one field broken per
  # body. Never a 5xx, a dropped connection or a stream; the worker serves the next job as usual.
  @M0-W-1302
  Scenario: A sample of malformed bodies is refused field by field, and the worker serves on
    When I POST 60 malformed bodies to /execute, each breaking the rule of one field
    Then every malformed body was refused with 400 and an error naming its field
    When I execute a job with prompt "Hello" and max_tokens 4
    Then the job finishes with an end event
