# Sourced by the .ci scripts: creates (once) and activates the project's virtual environment.
#   source .ci/env.sh [EXTRAS]     EXTRAS: comma-separated optional dependencies, default "test,oracle"
# .ci/conformance asks for "test" only: the conformance run never uses the oracle extra, whose
# llama-cpp-python is built from source (several minutes on two cores). .ci/run asks for both.
# torch is installed first and pinned so that pip takes the CPU wheel on machines without a GPU.
# Each extra is installed once per pyproject.toml version (a stamp file per extra in the venv).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WORKER_ORCD_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
EXTRAS="${1:-test,oracle}"
STAMP="$VENV/.installed-$(sha256sum <"$ROOT/pyproject.toml" | cut -c1-16)"
_elapsed() { echo "$(($(date +%s) - $1)) s"; }
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating the virtual environment $VENV" >&2
    "$PY" -m venv "$VENV"
fi
MISSING=()
if [ -f "$STAMP" ]; then
    touch "$STAMP-base" "$STAMP-test" "$STAMP-oracle"  # a venv set up before per-extra stamps had both
fi
for extra in ${EXTRAS//,/ }; do
    [ -f "$STAMP-$extra" ] || MISSING+=("$extra")
done
if [ ! -f "$STAMP-base" ] || [ ${#MISSING[@]} -gt 0 ]; then
    started=$(date +%s)
    "$VENV/bin/pip" install --quiet --upgrade pip >/dev/null 2>&1 || true
    if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        echo "[setup] installing torch==2.13.0 (CPU wheel, about 200 MB)" >&2
        "$VENV/bin/pip" install --quiet "torch==2.13.0"
    fi
    WANTED="$(IFS=,; echo "${MISSING[*]:-}")"
    case ",$WANTED," in
        *,oracle,*) echo "[setup] installing the project with [$WANTED]; the oracle extra builds llama.cpp from source (about 5-7 minutes on two cores, once)" >&2 ;;
        *) echo "[setup] installing the project${WANTED:+ with [$WANTED]}" >&2 ;;
    esac
    PIP_CACHE=()
    case ",$WANTED," in
        *,oracle,*)
            # llama.cpp's AMX matrix kernels, which -march=native builds in on CPUs that have AMX-INT8,
            # crash on multi-token batches of quantized weights on some such machines
            # (ggml-org/llama.cpp#20824; seen here in ggml_backend_amx_mul_mat). The oracle is built
            # without them, as on every CPU without AMX: an explicit -mno-* flag wins over -march=native
            # in GCC and Clang. Not from pip's wheel cache, which may hold a build made with them.
            if [ "$(uname -m)" = x86_64 ]; then
                export CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8"
            fi
            PIP_CACHE=(--no-cache-dir)
            ;;
    esac
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
        "$VENV/bin/pip" install --quiet "${PIP_CACHE[@]}" -e "$ROOT${WANTED:+[$WANTED]}"
    touch "$STAMP-base"
    for extra in "${MISSING[@]}"; do touch "$STAMP-$extra"; done
    echo "[setup] done in $(_elapsed "$started")" >&2
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
# The conformance run's shards (pytest-xdist -n; docs/harness.md "Sharded runs"): CONFORMANCE_SHARDS,
# default one per core, or one per GPU where nvidia-smi lists GPUs (each shard then gets its own); 1 runs
# serially.
GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "${GPUS:-0}" -gt 0 ]; then
    CONFORMANCE_SHARDS="${CONFORMANCE_SHARDS:-$GPUS}"
else
    CONFORMANCE_SHARDS="${CONFORMANCE_SHARDS:-$(nproc 2>/dev/null || echo 1)}"
fi
if ! [[ "$CONFORMANCE_SHARDS" =~ ^[1-9][0-9]*$ ]]; then
    echo "CONFORMANCE_SHARDS=$CONFORMANCE_SHARDS: expected a number of processes, 1 or more" >&2
    exit 2
fi
SHARD_ARGS=()
if [ "$CONFORMANCE_SHARDS" -gt 1 ]; then
    SHARD_ARGS=(-n "$CONFORMANCE_SHARDS")
    if [ "${GPUS:-0}" -ge "$CONFORMANCE_SHARDS" ]; then SHARD_ARGS+=(--gpu "$(seq -s, 0 $((CONFORMANCE_SHARDS - 1)))"); fi
fi
