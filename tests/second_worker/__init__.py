"""A second, independent M0 worker, used only by the harness self-tests.

It runs llama.cpp (llama-cpp-python) on the CPU and implements the M0 wire contract its own way, so the
conformance suite is tried against more than the reference worker it was written beside: SSE events as
`data:` lines only (the type inside the JSON), CRLF line endings, extra fields on every event, its own
error wording and shapes, U+FFFD for bytes that are not valid UTF-8, stop strings streamed as generated,
exit code 2 for usage errors, truthful device memory (0 bytes, not resident: it holds nothing on a GPU),
no /metrics and no optional flags. It shares no code with `reference_worker/` or `steps/`.

    python -m tests.second_worker --worker-id UUID --model /abs/model.gguf --gpu-device 0 --port 8080
"""
