"""The conforming stub worker as a shared worker that someone else started, for the attach-mode self-tests.

It keeps `stub_worker.py`'s HTTP contract and adds what attach mode looks at:

    --report-model NAME   /health `model` is NAME instead of the file name (detection by facts)
    --one-job             a second job while one runs is refused with 503 WORKER_BUSY (M0-W-1301)
    --busy-flag           /health carries `busy` (a field beyond the spec, as the reference worker has)
    --stuck               a cancelled job stops streaming but keeps the job slot for ever (a worker that
                          stays busy after a scenario)

    python tests/harness/stubs/attach_stub.py --worker-id W --model M.gguf --gpu-device 0 --port P \
        [--report-model NAME] [--one-job] [--busy-flag] [--stuck] [--token-delay-ms MS]
"""

from __future__ import annotations

import argparse
import threading
import time

from stub_worker import Handler, StubWorker, http_server, stub_arguments


class AttachStub(StubWorker):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.one_job = args.one_job
        self.busy_flag = args.busy_flag
        self.stuck = args.stuck
        self.running = 0
        self.wedged = False  # --stuck: a cancelled job never gave its slot back
        self.slot = threading.Lock()
        if args.report_model is not None:
            self.facts["model"] = args.report_model

    @property
    def busy(self) -> bool:
        return self.running > 0 or self.wedged

    def health(self) -> dict:
        body = super().health()
        if self.busy_flag:
            body["busy"] = self.busy
        return body


class AttachHandler(Handler):
    def _stream(self, body: dict) -> None:
        worker = self.worker
        with worker.slot:
            if worker.one_job and worker.busy:
                busy = {"code": "WORKER_BUSY", "message": "busy", "retriable": True}
                self._json(503, busy, Retry_After="1")
                return
            worker.running += 1
        try:
            super()._stream(body)
        finally:
            job_id = str(body.get("job_id", ""))
            with worker.slot:
                worker.running -= 1
                if worker.stuck and job_id in worker.cancelled:
                    worker.wedged = True


def main() -> None:
    parser = stub_arguments(__doc__)
    parser.add_argument("--framing", default="event")
    parser.add_argument("--token-delay-ms", type=float, default=5.0)
    parser.add_argument("--report-model")
    parser.add_argument("--one-job", action="store_true")
    parser.add_argument("--busy-flag", action="store_true")
    parser.add_argument("--stuck", action="store_true")
    args = parser.parse_args()
    server = http_server(AttachHandler, AttachStub(args), args.port)
    print(f"attach stub ready on {args.port}", flush=True)
    started = time.monotonic()
    try:
        server.serve_forever()
    finally:
        print(f"attach stub stopped after {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
