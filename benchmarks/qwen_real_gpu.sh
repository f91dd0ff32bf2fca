#!/usr/bin/env bash
# The real Qwen2.5-Coder-0.5B-Instruct Q4_K_M file on a GPU machine without network (issue 12, item 4):
# its greedy tokens through the fast path (tensor-core prefill, the decode step as a CUDA graph) against
# the CPU reference path's recorded tokens on the oracle prompts, then the real_qwen conformance scenarios
# against the reference worker on the GPU.
#
#   benchmarks/qwen_real_gpu.sh PARTS_DIR [RECORDED.json]
#
# PARTS_DIR holds the file split in pieces (`split -b 54M -d -a 1 FILE part`: part0, part1, ...), sent
# to the machine over several calls when one call can carry only part of the 491 MB; they are joined in
# name order and checked against the file's sha256 before anything runs. With the wheels the machine
# lacks in .whl/ (installed into /tmp/site). Writes greedy.json, greedy.log, conformance.log and
# conformance-reports.tar.gz into ${OUT:-reports/qwen-real-gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
PARTS=${1:?usage: benchmarks/qwen_real_gpu.sh PARTS_DIR [RECORDED.json]}
RECORDED=${2:-benchmarks/results/2026-12-04-qwen-real-greedy-oracle.json}
OUT="${OUT:-reports/qwen-real-gpu}"
PY="${PYTHON:-python3}"
NAME=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
mkdir -p "$OUT" fixtures/build/real
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
cat "$PARTS"/part* >"fixtures/build/real/$NAME" || exit 1
if ! echo "$SHA256  fixtures/build/real/$NAME" | sha256sum -c --quiet; then
    echo "error: the joined file's sha256 is not $SHA256 (a part is missing or damaged: $(ls "$PARTS"))" >&2
    exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
PIP_NO_INDEX=1 "$PY" -m fixtures prepare --tiny 2>&1 | tail -2
"$PY" -m benchmarks.qwen_greedy_device --device cuda --recorded "$RECORDED" --out "$OUT/greedy.json" \
    2>&1 | tee "$OUT/greedy.log" | tail -20
greedy_rc=${PIPESTATUS[0]}
"$PY" -m pytest features/ -m real_qwen --real-qwen -q -p no:cacheprovider -rs \
    --conformance-reports /tmp/qwen-real-reports 2>&1 | tee "$OUT/conformance.log" | tail -30
conf_rc=${PIPESTATUS[0]}
tar czf "$OUT/conformance-reports.tar.gz" -C /tmp qwen-real-reports
echo "greedy rc=$greedy_rc, conformance rc=$conf_rc"
[ "$greedy_rc" -eq 0 ] && [ "$conf_rc" -eq 0 ]
