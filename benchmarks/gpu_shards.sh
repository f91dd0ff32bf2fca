#!/usr/bin/env bash
# The conformance suite on a GPU machine, serial and sharded (pytest-xdist, one shard per listed GPU),
# with the reference worker on the GPU; compares the two runs' verdicts scenario by scenario and gate by
# gate (`steps.report.compare`) and records which GPU each spawned worker ran on.
#
#   benchmarks/gpu_shards.sh 0,1      two shards, a GPU each (a two-GPU host)
#   benchmarks/gpu_shards.sh 0 2      two shards sharing GPU 0 (a one-GPU host)
#   benchmarks/gpu_shards.sh 0,1 2 -k "stream or cancel"   a smaller selection (extra pytest arguments)
#
# Arguments: the `--gpu` list, the shard count (default: one per listed GPU), then extra pytest
# arguments for both runs. The selection is
# .ci/gpu-conformance's (no process scenarios, no SmolLM2, which a machine without network lacks).
# Writes to ${OUT:-reports/gpu-shards}: serial.log, sharded.log, compare.txt, gpu-apps.log (nvidia-smi's
# compute processes and the spawned workers' --gpu-device, sampled every 2 s during the sharded run),
# times.txt, and both report sets as a tarball. Carry `.whl` (see .ci/device-wheels).
set -uo pipefail
cd "$(dirname "$0")/.."
GPUS="${1:?usage: benchmarks/gpu_shards.sh GPU_LIST [SHARDS]}"
SHARDS="${2:-$(tr ',' '\n' <<<"$GPUS" | wc -l)}"
EXTRA=("${@:3}")
OUT="${OUT:-reports/gpu-shards}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/device.txt"
PIP_NO_INDEX=1 "$PY" -m fixtures prepare --tiny 2>&1 | tail -1
SELECTION=(features/ -q -p no:cacheprovider -rs --ignore=features/process -m "not model_smollm2" "${EXTRA[@]}")

sample_gpu_apps() {
    while :; do
        date -u +%T
        nvidia-smi --query-compute-apps=gpu_uuid,pid,used_memory --format=csv,noheader
        pgrep -af "reference_worker.*--gpu-device" | sed -E 's/^([0-9]+) .*--gpu-device ([0-9]+).*/worker pid \1 --gpu-device \2/'
        sleep 2
    done
}

started=$SECONDS
"$PY" -m pytest "${SELECTION[@]}" --gpu "${GPUS%%,*}" --conformance-reports /tmp/gpu-shards/serial >"$OUT/serial.log" 2>&1
serial_rc=$?
serial_s=$((SECONDS - started))

sample_gpu_apps >"$OUT/gpu-apps.log" 2>&1 &
SAMPLER=$!
started=$SECONDS
"$PY" -m pytest "${SELECTION[@]}" -n "$SHARDS" --gpu "$GPUS" --conformance-reports /tmp/gpu-shards/sharded >"$OUT/sharded.log" 2>&1
sharded_rc=$?
sharded_s=$((SECONDS - started))
kill "$SAMPLER" 2>/dev/null

"$PY" -m steps.report.compare /tmp/gpu-shards/serial/verdicts.json /tmp/gpu-shards/sharded/verdicts.json >"$OUT/compare.txt" 2>&1
compare_rc=$?
{
    echo "serial: --gpu ${GPUS%%,*}, ${serial_s} s, rc=$serial_rc: $(tail -1 "$OUT/serial.log")"
    echo "sharded: -n $SHARDS --gpu $GPUS, ${sharded_s} s, rc=$sharded_rc: $(tail -1 "$OUT/sharded.log")"
    echo "compare rc=$compare_rc: $(tail -1 "$OUT/compare.txt")"
    echo "workers per --gpu-device seen during the sharded run (pid count):"
    grep -o -E "worker pid [0-9]+ --gpu-device [0-9]+" "$OUT/gpu-apps.log" | sort -u | awk '{print $NF}' | sort | uniq -c
} | tee "$OUT/times.txt"
tar czf "$OUT/reports.tar.gz" -C /tmp gpu-shards
[ "$serial_rc" -eq 0 ] && [ "$sharded_rc" -eq 0 ] && [ "$compare_rc" -eq 0 ]
