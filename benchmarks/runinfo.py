"""What every benchmark record carries: the command, the date, the code version and the device.

A number without the machine and the code it was measured on cannot be compared with anything, so each
JSON record starts with `run_info()` and each Markdown table repeats it.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMIT_ENV = "BENCH_COMMIT"  # set where the checkout has no .git (the device machine gets a bare copy)
COPY_BYTES = 1 << 30  # 1 GiB per buffer: far past the 50-60 MB L2 of an H100/H200


def git_commit() -> str:
    if os.environ.get(COMMIT_ENV):  # named by the caller: the copy's own .git may lag behind its tree
        return os.environ[COMMIT_ENV]
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        out = None
    if out is not None and out.returncode == 0 and out.stdout.strip():
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    return os.environ.get(COMMIT_ENV) or "unknown (no .git here; set BENCH_COMMIT)"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def command_line() -> str:
    """The command as typed: `python3 -m package.module args` when run as a module."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    head = ["-m", spec.name] if spec is not None else sys.argv[:1]
    return shlex.join([Path(sys.executable).name, *head, *sys.argv[1:]])


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host_cpus": os.cpu_count(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            name=torch.cuda.get_device_name(device),
            capability=f"{props.major}.{props.minor}",
            total_memory_bytes=props.total_memory,
            multiprocessors=props.multi_processor_count,
            cuda_runtime=torch.version.cuda,
        )
    else:
        info["name"] = f"CPU ({platform.processor() or platform.machine()})"
    return info


def run_info(device: torch.device) -> dict[str, Any]:
    return {
        "command": command_line(),
        "date": utc_now(),
        "git_commit": git_commit(),
        "device": device_info(device),
    }


def publish(record: dict[str, Any], text: str, out: Path | None, stem: str) -> None:
    """Prints the Markdown `text`; with `out`, writes `<stem>.json` (the record) and `<stem>.md` there."""
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
        (out / f"{stem}.md").write_text(text)


def copy_bandwidth(
    device: torch.device, nbytes: int = COPY_BYTES, repeats: int = 20
) -> dict[str, Any] | None:
    """Device-to-device copy bandwidth, counting bytes read plus bytes written (the ceiling decode works under).

    Median of `repeats` copies timed with CUDA events after warm-up. None on CPU devices.
    """
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    nbytes = min(nbytes, free // 4)
    src = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=device)  # never time on zeros
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times_ms = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times_ms.append(start.elapsed_time(end))
    if not torch.equal(dst[:4096], src[:4096]):
        raise RuntimeError("device copy check failed: the destination differs from the source")
    median_ms = statistics.median(times_ms)
    del src, dst
    torch.cuda.empty_cache()
    return {
        "buffer_bytes": nbytes,
        "repeats": repeats,
        "median_ms": round(median_ms, 4),
        "gbps": round(2 * nbytes / (median_ms / 1e3) / 1e9, 1),  # read + write
    }
