"""What the HTTP/SSE path costs a decoded token, measured without a GPU.

The worker's real serving stack (`reference_worker.server`: FastAPI, sse-starlette, the `EventChannel`
from the job thread, uvicorn) runs in a process of its own, as `python -m reference_worker` does, in front
of a paced engine that stands in for the decode loop: token i is ready at `i * token_ms` (the device's
step, waited for with the GIL released, as a CUDA event's synchronize is), and the engine then spends
`host_us` of pure-Python work with the GIL held (the host's share of a token: bookkeeping, detokenizing,
the stop matcher, the next launch). The client reads the SSE stream from this process.

For each host share it reports the engine's own rate with nothing reading its events (what the in-process
benchmark measures), the rate the HTTP client sees, and the difference: the part of the issue's budget
(HTTP within 10 % of in process) that serving takes at that token rate, on this machine's CPU. Only the
GPU run (`benchmarks.decode --http`) is the verdict; this says where a gap would come from.

    python -m benchmarks.sse_overhead [--token-ms 1.14] [--host-us 0 200 400 800] [--tokens 512] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from collections.abc import Iterator
from typing import Any

from benchmarks.decode import execute_job
from steps.ports import free_port


class PacedEngine:
    """A `Generator` whose token i is ready `token_s * i` after the job's first, then costs `host_s` of
    Python work with the GIL held; the tokens are the request's max_tokens."""

    def __init__(self, token_s: float, host_s: float) -> None:
        self.token_s, self.host_s = token_s, host_s

    def generate(self, request: Any, cancel: Any) -> Iterator[Any]:
        from reference_worker.generation import EndEvent, PromptEvent, StopReason, TokenEvent

        yield PromptEvent(1)
        t0 = time.perf_counter()
        for i in range(request.max_tokens):
            wait = t0 + (i + 1) * self.token_s - time.perf_counter()
            if wait > 0:
                time.sleep(wait)  # the GIL is free, as while the host waits for the device
            _hold_gil(self.host_s)
            if cancel.cancelled:
                return
            yield TokenEvent(i, 100 + i % 100, f"t{i % 100} ")
        decode_ms = int((time.perf_counter() - t0) * 1000)
        yield EndEvent(request.max_tokens, StopReason.MAX_TOKENS, 1, decode_ms)


def _hold_gil(seconds: float) -> None:
    """Pure-Python work (the GIL held throughout) for `seconds`."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1


def in_process_rate(engine: PacedEngine, tokens: int) -> float:
    """Tokens/s of the engine's generator consumed directly, as the in-process benchmark does."""
    from reference_worker.generation import CancelToken, GenerationRequest, TokenEvent

    request = GenerationRequest(job_id="in-process", prompt="x", max_tokens=tokens)
    stamps = [time.perf_counter() for e in engine.generate(request, CancelToken()) if type(e) is TokenEvent]
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def serve(port: int, token_s: float, host_s: float) -> None:
    """The worker's app in front of a `PacedEngine` on 127.0.0.1:`port` (run in a child process)."""
    import io

    import uvicorn

    from reference_worker.device_memory import DeviceMemory
    from reference_worker.logs import EventLog
    from reference_worker.server import Limits, ModelInfo, WorkerState
    from reference_worker.server.app import create_app

    state = WorkerState(
        engine=PacedEngine(token_s, host_s),
        count_tokens=lambda text: len(text.split()),
        model=ModelInfo(
            name="paced",
            model_ref="/models/paced.gguf",
            architecture="qwen2",
            quant_kind="Q4_K_M",
            tokenizer_kind="gguf-bpe",
            vocab_size=1000,
            context_length=32768,
            device="cpu",
        ),
        memory=DeviceMemory("cpu"),
        log=EventLog(io.StringIO(), worker_id="paced", model_ref="/models/paced.gguf", gpu_device=0),
        limits=Limits(max_tokens_out=32768, inference_timeout_sec=600),
    )
    uvicorn.run(create_app(state), host="127.0.0.1", port=port, log_config=None, access_log=False)


def http_rate(token_s: float, host_s: float, tokens: int, runs: int) -> list[float]:
    """Tokens/s the client sees per run (from the first token event to the last)."""
    import httpx

    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(port, token_s, host_s))
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=httpx.Timeout(60.0)) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get(f"{url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or not server.is_alive():
                    raise RuntimeError("the paced worker did not come up")
                time.sleep(0.1)
            execute_job(client, url, "warm", 16, 1)
            rates = []
            for _ in range(runs):
                gaps = execute_job(client, url, "x", tokens, 1)["inter_token_s"]
                if sum(gaps) <= 0:  # every token event arrived in one read: no rate to tell
                    raise RuntimeError(f"the {tokens} token events arrived at once: pace them slower to time")
                rates.append(len(gaps) / sum(gaps))
            return rates
    finally:
        server.terminate()
        server.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--token-ms", type=float, default=1.14, help="the device's step (Qwen on the H200: 1.14)"
    )
    parser.add_argument("--host-us", type=float, nargs="+", default=[0.0, 200.0, 400.0, 800.0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    token_s = args.token_ms / 1000
    rows = []
    print("| host µs / token | in process tok/s | over HTTP tok/s (runs) | HTTP vs in process |")
    print("|---:|---:|---:|---:|")
    for host_us in args.host_us:
        host_s = host_us / 1e6
        alone = in_process_rate(PacedEngine(token_s, host_s), args.tokens)
        rates = http_rate(token_s, host_s, args.tokens, args.runs)
        http = statistics.median(rates)
        rows.append({"host_us": host_us, "in_process_tok_s": alone, "http_tok_s": rates})
        shown = " / ".join(f"{r:.1f}" for r in rates)
        print(f"| {host_us:.0f} | {alone:.1f} | {http:.1f} ({shown}) | {100 * (http / alone - 1):+.1f} % |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"token_ms": args.token_ms, "tokens": args.tokens, "rows": rows}, out, indent=1)


if __name__ == "__main__":
    main()
