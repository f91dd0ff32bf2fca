@m0 @model_any
Feature: The event stream of a job
  A job's answer is a stream of events: "started" first, then one "token" per generated token (and
  optional "metrics"), then exactly one closing event, "end" or "error". Each event type carries fixed
  fields, and every piece of text is valid UTF-8.

  Background:
    Given a worker serving any model

  @M0-W-1310 @M0-W-1311
  Scenario: A finished job streams started, its tokens and one closing event
    When I execute a job with prompt "Write a haiku about GPU computing" and max_tokens 8
    Then the response is an event stream
    And every event type is one of started, token, metrics, end, error
    And the events are in the order started, token*, terminal
    And the stream has exactly one terminal event

  @M0-W-1312
  Scenario: Every event carries the fields of its type
    When I execute a job with prompt "Write a haiku about GPU computing" and max_tokens 8
    Then every event carries the fields the spec gives its type

  @M0-W-1312 @M0-W-1824
  Scenario Outline: Token texts stay valid UTF-8 for <script> prompts
    When I execute a job with prompt "<prompt>" and max_tokens 16
    Then every event is valid UTF-8
    And the events are in the order started, token*, terminal

    Examples:
      | script | prompt                              |
      | CJK    | 日本語のテキストを続けてください      |
      | emoji  | Tell me a story 🚀🎉👍 with emoji    |
      | mixed  | Ünïcödé, Ελληνικά, русский, 中文      |
