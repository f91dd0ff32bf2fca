"""The CPU decode GEMV over the stored blocks: `kernels/cpu_native.c`, built with the system's C compiler.

Decode on CPU is bound by the bytes the one-row products read: the float16 copies of `kernels.cpu_dense`
are 16 bits per weight, the stored Q4_0 / Q4_1 / Q5_0 / Q8_0 / Q4_K / Q6_K blocks 4.5 / 5 / 5.5 / 8.5 / 4.5 / 6.6. This path multiplies one
float32 activation row with the stored blocks directly (AVX2 + FMA, float32 throughout; see the C file),
so it holds nothing beyond the weights. PyTorch's own int4 kernel does not fit here: on CPU only its
bfloat16 form is fast, and its rounding is ten times the float16 GEMV's (`benchmarks/cpu_int4pack.py`).

The library is compiled once per source version with `cc` (`$CC` if set) into
`$XDG_CACHE_HOME/worker-orcd/` (default `~/.cache/worker-orcd/`) and loaded with ctypes. Where there is
no compiler, the build fails, or the CPU lacks AVX2/FMA/F16C, `available()` is False and the float16
path serves as before. The kernel runs on the calling thread only. It is the first CPU entry of
`kernels.backend.FAST_PATHS`; `--kernels reference` never uses it.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from kernels.formats import GGMLType
from kernels.qmatmul import FastPath
from kernels.qtensor import QTensor

# One library: the GEMVs and the one-call decode step that uses them (`kernels/cpu_step.py`).
SOURCES = tuple(Path(__file__).with_name(name) for name in ("cpu_native.c", "cpu_step.c"))
HEADER = Path(__file__).with_name("cpu_native.h")
# -Bsymbolic: calls between the library's own functions (the step's GEMVs) bind to them, never to a
# same-named symbol another library of the process exports.
CFLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-shared", "-fPIC", "-Wl,-Bsymbolic")
REQUIRED_CPU_FLAGS = frozenset({"avx2", "fma", "f16c"})
# ggml type -> the C function that multiplies one row with its blocks.
FUNCTIONS = {
    GGMLType.Q4_0: "gemv_q4_0",
    GGMLType.Q4_1: "gemv_q4_1",
    GGMLType.Q5_0: "gemv_q5_0",
    GGMLType.Q8_0: "gemv_q8_0",
    GGMLType.Q4_K: "gemv_q4_k",
    GGMLType.Q6_K: "gemv_q6_k",
}

_lock = threading.Lock()
_state: dict[str, object] = {}  # "lib": the loaded library or None, "why": why it is not available


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "worker-orcd"


def _build() -> Path:
    """The compiled library for this source and these flags, compiled now if not cached."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise OSError("no C compiler (cc, gcc or $CC) on PATH")
    flags = CFLAGS
    source = b"".join(path.read_bytes() for path in (*SOURCES, HEADER))
    digest = hashlib.sha256(source + " ".join((compiler, *flags)).encode()).hexdigest()[:16]
    target = _cache_dir() / f"cpu_native-{digest}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        done = subprocess.run(
            [compiler, *flags, "-o", str(built), *map(str, SOURCES), "-lm"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise OSError(f"{compiler} failed: {done.stderr.strip()[:500]}")
        os.replace(built, target)  # atomic: concurrent workers never load a half-written file
    return target


def _load() -> ctypes.CDLL | None:
    with _lock:
        if "lib" in _state:
            return _state["lib"]  # type: ignore[return-value]
        lib, why = None, ""
        missing = REQUIRED_CPU_FLAGS - _cpu_flags()
        if missing:
            why = f"the CPU lacks {', '.join(sorted(missing))}"
        else:
            try:
                lib = ctypes.CDLL(str(_build()))
                for name in FUNCTIONS.values():
                    fn = getattr(lib, name)
                    fn.restype = None
                    fn.argtypes = [
                        ctypes.c_void_p,
                        ctypes.c_void_p,
                        ctypes.c_void_p,
                        ctypes.c_int64,
                        ctypes.c_int64,
                    ]
            except (OSError, subprocess.SubprocessError, AttributeError) as err:
                lib, why = None, str(err)
        _state["lib"], _state["why"] = lib, why
        return lib


def library() -> ctypes.CDLL | None:
    """The loaded library (None where `available()` is False), for `kernels.cpu_step`."""
    return _load()


def available() -> bool:
    """Whether the native GEMV can run here (compiles it on first call)."""
    return _load() is not None


def unavailable_reason() -> str:
    """Why `available()` is False ("" when it is True)."""
    _load()
    return str(_state.get("why", ""))


def serves(x: torch.Tensor, w: QTensor) -> bool:
    """One float32 activation row against a 2-D CPU matrix of a type with a native GEMV."""
    return (
        w.qtype in FUNCTIONS
        and len(w.shape) == 2
        and x.dtype == torch.float32
        and x.numel() == w.shape[1]
        and w.device.type == "cpu"
        and available()
    )


def _gemv(x: torch.Tensor, w: QTensor, y: torch.Tensor) -> None:
    """y (float32, contiguous, `w.shape[0]` values) = one row `x` times `w`; x contiguous float32."""
    fn = getattr(_state["lib"], FUNCTIONS[w.qtype])
    fn(w.data.data_ptr(), x.data_ptr(), y.data_ptr(), w.shape[0], w.shape[1])


def native_qmatmul(
    x: torch.Tensor, w: QTensor, bias: torch.Tensor | None, out_dtype: torch.dtype
) -> torch.Tensor:
    row = x.reshape(-1).contiguous()
    y = torch.empty(w.shape[0], dtype=torch.float32)
    _gemv(row, w, y)
    if bias is not None:
        y += bias.to(torch.float32)
    return y.view(*x.shape[:-1], w.shape[0]).to(out_dtype)


def native_qmatmuls(
    x: torch.Tensor, weights: tuple[QTensor, ...], biases: tuple[torch.Tensor | None, ...]
) -> tuple[torch.Tensor, ...] | None:
    """One row through each of `weights` into one output buffer (column views); None unless every weight
    has a native GEMV."""
    if not all(serves(x, w) for w in weights):
        return None
    row = x.reshape(-1).contiguous()
    y = torch.empty(sum(w.shape[0] for w in weights), dtype=torch.float32)
    outs, r0 = [], 0
    for w, b in zip(weights, biases, strict=True):
        part = y[r0 : r0 + w.shape[0]]
        _gemv(row, w, part)
        if b is not None:
            part += b.to(torch.float32)
        outs.append(part.view(*x.shape[:-1], w.shape[0]).to(x.dtype))
        r0 += w.shape[0]
    return tuple(outs)


FAST_PATH = FastPath(
    name="cpu-native-gemv",
    devices=("cpu",),
    supports=serves,
    qmatmul=native_qmatmul,
    qmatmuls=native_qmatmuls,
)
