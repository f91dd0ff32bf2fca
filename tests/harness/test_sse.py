"""The SSE parser reads both M0 framings and keeps what the checks need (no worker involved)."""

from __future__ import annotations

from steps.sse import SSEParser, SSEStream, parse_event_stream


def parse(data: bytes, chunk: int = 3) -> list:
    parser = SSEParser(started_at=0.0)
    events = []
    for start in range(0, len(data), chunk):
        events += list(parser.feed(data[start : start + chunk]))
    return events + list(parser.end())


def test_event_line_framing_with_crlf_comments_id_and_retry():
    data = (
        b": keep-alive\r\n\r\nretry: 100\r\nid: 1\r\nevent: started\r\n"
        b'data: {"job_id": "j"}\r\n\r\nevent: token\rdata: {"t": "a", "i": 0}\r\r'
    )
    events = parse(data)
    assert [(e.type, e.data) for e in events] == [("started", {"job_id": "j"}), ("token", {"t": "a", "i": 0})]
    assert [e.index for e in events] == [0, 1]


def test_type_inside_the_payload_and_multi_line_data():
    events = parse(b'data: {"type": "end",\ndata: "tokens_out": 0}\n\n', chunk=1)
    assert events[0].type == "end"
    assert events[0].data == {"type": "end", "tokens_out": 0}
    assert events[0].raw == b'{"type": "end",\n"tokens_out": 0}'


def test_invalid_utf8_is_reported_not_raised():
    events = parse(b'data: {"type": "token", "t": "\xe4\xb8", "i": 0}\n\n')
    assert events[0].type == "token"
    assert "not valid UTF-8" in events[0].problem


def test_an_unterminated_last_event_and_empty_data_are_not_dispatched():
    assert parse(b"event: end\n\n" + b'data: {"type": "end"}') == []


def test_summary_folds_runs():
    stream = SSEStream(status_code=200, headers=None)  # type: ignore[arg-type]
    stream.events = parse(b'data: {"type":"started"}\n\n' + b'data: {"type":"token"}\n\n' * 3)
    assert stream.summary() == "started, token x3"


def test_a_whole_body_parses_like_chunks_and_a_token_text_cannot_pass_for_an_event_type():
    body = b'event: token\ndata: {"type": "token", "t": "started", "i": 0}\n\ndata: {"type": "end"}\n\n'
    events = parse_event_stream(body)
    assert [(e.type, e.event_field) for e in events] == [("token", "token"), ("end", None)]
    assert [(e.type, e.data) for e in events] == [(e.type, e.data) for e in parse(body)]
