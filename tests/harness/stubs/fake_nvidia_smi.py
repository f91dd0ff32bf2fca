"""A stand-in for `nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader`.

Lists the processes registered in $FAKE_GPU_APPS_DIR (one file per pid holding its device memory in MiB,
written by `lifecycle_stub.py`) that are still alive, as the driver lists the live processes holding a
CUDA context. Any other query prints nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return not any(
            line.startswith("State:") and "Z" in line.split()[1:2] for line in status.read_text().splitlines()
        )
    except OSError:
        return False


def main() -> None:
    if "--query-compute-apps=pid,used_memory" not in sys.argv:
        return
    for entry in sorted(Path(os.environ.get("FAKE_GPU_APPS_DIR", "/nonexistent")).glob("[0-9]*")):
        if alive(int(entry.name)):
            print(f"{entry.name}, {entry.read_text(encoding='utf-8').strip()} MiB")


if __name__ == "__main__":
    main()
