"""llama.cpp's `llama-bench` on the same GGUF files as the worker: the yardstick for decode and prefill.

    python -m benchmarks.llamacpp build  [--src TARBALL] [--cache DIR] [--jobs 16]
    python -m benchmarks.llamacpp status [--src TARBALL] [--cache DIR]
    python -m benchmarks.llamacpp export --out DIR       (pack the finished build for a later machine)
    python -m benchmarks.llamacpp bench --model FILE [--model FILE ...] [--build] [--out records.json]

`build` unpacks the llama.cpp source tarball (default `.bench-src/llama.cpp-src.tar.xz`, kept out of git)
and builds only `llama-bench` with the CUDA backend for sm_90, once per tarball: the build is cached under
`--cache` (default /tmp/llamacpp-bench/<sha256 of the tarball>), so later calls on the same machine reuse
it; `export` packs it into parts which, placed beside the tarball, let a fresh machine skip the compile.
`bench` runs `llama-bench -m FILE -ngl 99 -fa 1 -p 512 -n 128 -r 3 -o json` on each file (through
`steps.llama_bench`, as the harness's parity scenarios do) and writes
one record per file (kind "llama-bench") with the same run information and traffic model as the
worker's records, so `benchmarks.report` can put them side by side.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from benchmarks.runinfo import REPO_ROOT
from steps.llama_bench import LlamaBenchError, run_llama_bench

DEFAULT_SRC = REPO_ROOT / ".bench-src" / "llama.cpp-src.tar.xz"
DEFAULT_CACHE = Path("/tmp/llamacpp-bench")
CMAKE_CONFIGURE = [
    "-DGGML_CUDA=ON",
    "-DCMAKE_CUDA_ARCHITECTURES=90",
    # Generic x86-64 host code: an exported build (see `export`) runs on another machine than the one that
    # compiled it. Only the host side changes; with every layer offloaded llama-bench's timings are the GPU's.
    "-DGGML_NATIVE=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DCMAKE_BUILD_TYPE=Release",
]
BUILD_OK, BUILD_FAILED, BUILD_LOG = "BUILD_OK", "BUILD_FAILED", "build.log"
PREBUILT_PREFIX = "llama-bench-sm90-"
MIB = 1 << 20
_PROGRESS = re.compile(r"\[\s*(\d+)%\]")


class LlamaCppError(LlamaBenchError):
    """The build failed, or a llama-bench run (LlamaBenchError); the message says which and where the log is."""


_PART_NAME = re.compile(rf"^{re.escape(PREBUILT_PREFIX)}([0-9a-f]{{16}})\.tar\.xz\.part\d+$")


def source_digest(src: Path) -> str:
    """The first 16 hex digits of the tarball's sha256. Without the tarball, the digest in the names of
    the exported build's parts beside it (`export`): a machine that restores them needs nothing else, so
    the 8 MiB tarball need not travel with them."""
    if src.is_file():
        h = hashlib.sha256()
        with open(src, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()[:16]
    names = src.parent.glob(f"{PREBUILT_PREFIX}*.tar.xz.part*") if src.parent.is_dir() else ()
    digests = sorted({m.group(1) for p in names if (m := _PART_NAME.match(p.name))})
    if len(digests) == 1:
        return digests[0]
    if not digests:
        raise LlamaCppError(
            f"{src}: llama.cpp source tarball not found, nor the parts of an exported build beside it "
            "(carry them with carry=['.bench-src'])"
        )
    raise LlamaCppError(
        f"{src}: no source tarball, and the parts of {len(digests)} exported builds beside it "
        f"({', '.join(digests)}): keep one set, or the tarball"
    )


def build_dir(src: Path, cache: Path) -> Path:
    return cache / source_digest(src)


def llama_bench_path(work: Path) -> Path:
    return work / "build" / "bin" / "llama-bench"


def _run_logged(cmd: list[str], log: Path, cwd: Path) -> int:
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        try:
            return subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT).returncode
        except FileNotFoundError:
            out.write(f"{cmd[0]}: command not found\n")
            return 127


def prebuilt_parts(src: Path) -> list[Path]:
    """Parts of an exported build of this tarball lying beside it (see `export`), in order."""
    return sorted(src.parent.glob(f"{PREBUILT_PREFIX}{source_digest(src)}.tar.xz.part*"))


def extract_data(tar: tarfile.TarFile, dest: Path) -> None:
    """`tar.extractall(dest)` with the 'data' filter: plain files, directories and links that stay inside
    `dest`, nothing else. Pythons before the filter (3.11.0-3.11.3, which `requires-python` admits) get
    the same refusals checked here first, as a `tarfile.TarError` naming the member."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    root = dest.resolve()
    for member in tar.getmembers():
        target = (dest / member.name).resolve()
        kind_ok = member.isfile() or member.isdir() or member.issym() or member.islnk()
        link_ok = not (member.issym() or member.islnk()) or (
            (target.parent if member.issym() else dest) / member.linkname
        ).resolve().is_relative_to(root)
        if not (kind_ok and link_ok and target.is_relative_to(root)):
            raise tarfile.TarError(
                f"refusing {member.name!r}: not a plain file, directory or link inside {dest}"
            )
    tar.extractall(dest)


def restore_prebuilt(src: Path, work: Path) -> bool:
    """Unpacks an exported build into `work/build/bin` (the path it was built at, so its RPATH holds)."""
    parts = prebuilt_parts(src)
    if not parts:
        return False
    data = b"".join(p.read_bytes() for p in parts)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:xz") as tar:
            extract_data(tar, work / "build" / "bin")
    except (tarfile.TarError, lzma.LZMAError, EOFError) as e:
        # Parts of two different exports, or a truncated copy: compile instead of failing the run.
        print(f"prebuilt parts beside {src.name} do not unpack ({e}); compiling instead", file=sys.stderr)
        return False
    problem = _cannot_start(llama_bench_path(work))
    if problem:
        # Built elsewhere against libraries this machine lacks (cuBLAS, the CUDA runtime): compile here.
        print(
            f"the prebuilt llama-bench beside {src.name} does not start ({problem}); compiling instead",
            file=sys.stderr,
        )
        shutil.rmtree(work / "build" / "bin", ignore_errors=True)
        return False
    (work / BUILD_OK).write_text(f"restored from {len(parts)} prebuilt part(s) beside {src.name}\n")
    return True


def _cannot_start(exe: Path) -> str:
    """Why `exe -h` does not run to its usage text (a shared library not found, say), or "" when it does."""
    try:
        done = subprocess.run([str(exe), "-h"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if done.returncode == 0:
        return ""
    lines = (done.stderr or done.stdout).strip().splitlines()
    return f"exit code {done.returncode}: {lines[-1] if lines else 'no output'}"


def build(src: Path = DEFAULT_SRC, cache: Path = DEFAULT_CACHE, jobs: int = 16) -> Path:
    """The llama-bench binary: cached, else restored from an exported build, else compiled now."""
    work = build_dir(src, cache)
    exe = llama_bench_path(work)
    if (work / BUILD_OK).is_file() and exe.is_file():
        return exe
    work.mkdir(parents=True, exist_ok=True)
    if restore_prebuilt(src, work) and exe.is_file():
        return exe
    if not src.is_file():
        raise LlamaCppError(
            f"{src}: the exported build beside it is not usable here, and there is no tarball to compile"
        )
    (work / BUILD_FAILED).unlink(missing_ok=True)
    log = work / BUILD_LOG
    started = time.monotonic()
    if not (work / "llama.cpp" / "CMakeLists.txt").is_file():
        with tarfile.open(src) as tar:
            extract_data(tar, work)
    steps = [
        ["cmake", "-S", "llama.cpp", "-B", "build", *CMAKE_CONFIGURE],
        ["cmake", "--build", "build", f"-j{jobs}", "--target", "llama-bench"],
    ]
    for cmd in steps:
        rc = _run_logged(cmd, log, work)
        if rc != 0:
            (work / BUILD_FAILED).write_text(f"exit code {rc}: {' '.join(cmd)}\n")
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
            raise LlamaCppError(f"llama.cpp build step failed (exit {rc}); log {log}:\n{tail}")
    (work / BUILD_OK).write_text(f"built in {time.monotonic() - started:.0f} s\n")
    return exe


def build_status(src: Path = DEFAULT_SRC, cache: Path = DEFAULT_CACHE) -> str:
    """One line: built (and how long it took), failed, or how far the compile got."""
    work = build_dir(src, cache)
    if (work / BUILD_OK).is_file():
        return f"llama-bench built ({(work / BUILD_OK).read_text().strip()}): {llama_bench_path(work)}"
    if (work / BUILD_FAILED).is_file():
        return f"llama.cpp build failed: {(work / BUILD_FAILED).read_text().strip()} (log {work / BUILD_LOG})"
    log = work / BUILD_LOG
    if not log.is_file():
        return "llama.cpp build not started"
    percents = _PROGRESS.findall(log.read_text(errors="replace"))
    lines = log.read_text(errors="replace").splitlines()
    return f"llama.cpp build unfinished at {percents[-1] if percents else 0}% ({len(lines)} log lines; log {log})"


def _reproducible(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Stripping rewrites the files; without fixed times and owners a second export of the same build
    # would give other bytes, and parts of two exports would not join.
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def export(src: Path, cache: Path, out: Path, part_mib: int = 15, max_mib: int = 44) -> list[Path]:
    """Packs the finished build's bin/ (llama-bench and its shared libraries, symbol tables stripped) as
    xz parts of at most `part_mib` MiB, so a later machine can skip the compile: put the parts in
    `.bench-src/` (beside the tarball, or alone: `source_digest`). Nothing is written when the packed build
    exceeds `max_mib` (the upload limit is 64 MiB with the working tree, the wheels and the source tarball,
    about 21 MiB together)."""
    work = build_dir(src, cache)
    if not (work / BUILD_OK).is_file():
        raise LlamaCppError(f"nothing to export: {build_status(src, cache)}")
    bin_dir = work / "build" / "bin"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", preset=9) as tar:
        for f in sorted(bin_dir.iterdir()):
            if f.is_file() and not f.is_symlink():
                # Symbols are not needed to run; the CUDA kernels (fatbins) stay.
                # Without binutils the files go unstripped (larger, still runnable).
                if shutil.which("strip"):
                    subprocess.run(["strip", "--strip-unneeded", str(f)], capture_output=True, check=False)
            if f.is_file() or f.is_symlink():
                tar.add(f, arcname=f.name, filter=_reproducible)
    data = buf.getvalue()
    if len(data) > max_mib << 20:
        raise LlamaCppError(f"the packed build is {len(data) / MIB:.1f} MiB, over the {max_mib} MiB limit")
    out.mkdir(parents=True, exist_ok=True)
    step = part_mib << 20
    paths = []
    for i in range(0, len(data), step):
        path = out / f"{PREBUILT_PREFIX}{source_digest(src)}.tar.xz.part{i // step:02d}"
        path.write_bytes(data[i : i + step])
        paths.append(path)
    return paths


def bench_records(models: list[Path], exe: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from benchmarks.runinfo import copy_bandwidth, run_info
    from benchmarks.traffic import bandwidth_summary, weight_traffic

    device = torch.device("cuda", 0)
    copy = copy_bandwidth(device)
    # A build from a source tarball reports build_commit "unknown" (no git there): the tarball names it.
    source = {"tarball": args.src.name, "sha256": source_digest(args.src)}
    records = []
    for model in models:
        argv, parsed = run_llama_bench(
            exe, model, n_prompt=args.p, n_gen=args.n, reps=args.r, timeout_s=args.timeout_s
        )
        traffic = weight_traffic(model)
        record = {
            "kind": "llama-bench",
            "label": args.label,
            **run_info(device),
            "llama_bench_command": " ".join(argv),
            "llama_source": source,
            "copy_bandwidth": copy,
            "model": traffic,
            **parsed,
        }
        tg = parsed["tests"].get(f"tg{args.n}")
        if tg is not None:
            record.update(bandwidth_summary(traffic["weight_bytes_per_token"], tg["avg_ts"], copy))
        records.append(record)
        print(
            f"{model.name}: " + ", ".join(f"{k} {v['avg_ts']:.2f} tok/s" for k, v in parsed["tests"].items())
        )
    return records


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.llamacpp", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("build", "status", "export", "bench"):
        s = sub.add_parser(name)
        s.add_argument("--src", type=Path, default=DEFAULT_SRC, help="llama.cpp source tarball")
        s.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="build cache directory")
        s.add_argument("--jobs", type=int, default=16)
        if name == "export":
            s.add_argument("--out", type=Path, required=True, help="folder for the packed build's parts")
            s.add_argument("--max-mib", type=int, default=44)
        if name == "bench":
            s.add_argument("--model", type=Path, action="append", required=True)
            s.add_argument("--build", action="store_true", help="build first when no cached build exists")
            s.add_argument("-p", type=int, default=512, help="prompt tokens (pp test)")
            s.add_argument("-n", type=int, default=128, help="generated tokens (tg test)")
            s.add_argument("-r", type=int, default=3, help="repetitions")
            s.add_argument("--timeout-s", type=float, default=600)
            s.add_argument("--label", default="")
            s.add_argument("--out", type=Path, help="write the records (a JSON list) here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "status":
            print(build_status(args.src, args.cache))
            return 0
        if args.command == "build":
            print(f"llama-bench: {build(args.src, args.cache, args.jobs)}")
            return 0
        if args.command == "export":
            for path in export(args.src, args.cache, args.out, max_mib=args.max_mib):
                print(f"{path} {path.stat().st_size / MIB:.1f} MiB")
            return 0
        work = build_dir(args.src, args.cache)
        exe = build(args.src, args.cache, args.jobs) if args.build else llama_bench_path(work)
        if not (work / BUILD_OK).is_file():
            raise LlamaCppError(f"no finished build: {build_status(args.src, args.cache)}")
        missing = [str(m) for m in args.model if not m.is_file()]
        if missing:
            raise LlamaCppError(f"no such model file: {', '.join(missing)}")
        records = bench_records([m.resolve() for m in args.model], exe, args)
    except (LlamaBenchError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
