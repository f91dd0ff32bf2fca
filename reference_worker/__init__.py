"""The reference worker-orcd M0 worker: one GGUF model, one device, HTTP + SSE."""
