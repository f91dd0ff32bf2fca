#!/usr/bin/env bash
# The GPU benchmark in one device call: the reference worker and llama.cpp on the same files, same run.
#
#   benchmarks/run_gpu.sh [qwen] [phi] [gpt-oss] [all]        (default: qwen)
#
# Steps: start the llama.cpp build (background, niced, cached under /tmp); install the carried wheels;
# write the full-shape random-weight GGUFs (`python -m fixtures prepare --shaped ...`); run
# `benchmarks.decode` on each file; once the build is done, `benchmarks.llamacpp bench` on each file;
# then `benchmarks.report` writes the side-by-side report. Everything lands in $OUT (at most 8 files: past
# that, the JSON twins of Markdown results are packed into json.tar.gz):
# run.log, report.md, report.json (all records), and with BENCH_EXPORT_BUILD=1 the packed llama.cpp build.
#
# Run from the repository root, with the wheels and the llama.cpp source carried:
#   carry=[".whl", ".bench-src"]
# Environment (all optional):
#   OUT                  results folder (the device tool sets it; default benchmarks/results/latest)
#   BENCH_DEADLINE_S     stop starting new work after this many seconds and write the report (default 560)
#   BENCH_LABEL          label stored in every record, e.g. "smoke"
#   BENCH_DECODE_ARGS    arguments for benchmarks.decode (default "--time-budget-s 60": at most a minute of
#                        timed decode per model), e.g. "--runs 5 --time-budget-s 120" or "--http"
#   BENCH_HTTP           1: after each model's in-process decode, the same `benchmarks.decode` over HTTP/SSE (a
#                        worker process; the report's side-by-side table then shows both rates and their ratio)
#   BENCH_WORKER_FLAGS   the worker's performance flags for benchmarks.decode and benchmarks.profile_step,
#                        e.g. "--dependent-launch" or "--no-prefill-graphs" (default: the worker's defaults)
#   BENCH_COMMIT         commit id to record (the device's copy of the tree has no .git)
#   BENCH_SKIP_LLAMACPP  1: worker only, no llama.cpp build
#   BENCH_EXPORT_BUILD   1: pack a build compiled in this call into $OUT (llama-bench-sm90-*.part*); put those
#                        parts in .bench-src/ and later calls restore them instead of compiling (~6 min)
#   BENCH_TESTS          pytest arguments for CUDA tests run first, after building the tiny fixtures, e.g.
#                        "tests/worker/test_decode_step.py tests/kernels/test_decode_kernels.py -k 'q4_k or q6_k'"
#                        (shell quoting); if they fail, nothing is benchmarked (the log is $OUT/cuda-tests.log)
#   BENCH_PROFILE        1: after each model's benchmark, `benchmarks.profile_step --steps 16` on it (with
#                        --prefill-tokens 512), appended to $OUT/profile.md
#   BENCH_STEP_AB        1: after each model's benchmark, `benchmarks.step_ab --tokens 128 --reps 2` on it (the
#                        decode variants in one process, dependent launch on and off among them), appended to
#                        $OUT/step-ab.md; "launch": without the variants that take the fused step apart
#                        (`--launch-only`); BENCH_STEP_AB_ONLY: only the default and the variants whose name
#                        contains one of these words (`--only`, e.g. "GEMV late"), or with ';' between them
#                        all the words of one of these texts (e.g. "before the wait;splits as clusters")
#   BENCH_STEP_BASE      a second source tree (as BENCH_GEMV_BASE: an earlier commit's `git archive`, carried
#                        untracked): after each model's benchmark, its decode step with the default kernels
#                        timed in this tree and that one in turn (this, base, this, base; `benchmarks.step_ab
#                        --only default`, each run its own process), appended to $OUT/step-ab.md: a change's
#                        effect on the whole step of each model, on one machine in one call
#   BENCH_PREFILL_KERNELS  1: before the models, `benchmarks.kernels_prefill` (each prefill product of the three
#                        models at 512 rows: the float16 scratch + cuBLAS against the GEMM decoding the packed
#                        tiles) into $OUT/kernels_prefill.{md,json}; "sweep": also the GEMM's other launch
#                        shapes (each one compiled per format: minutes)
#   BENCH_NCU            a kernels_gemv shape filter, e.g. "phi-3-mini": before the models, `benchmarks.ncu_gemv`
#                        (one launch of each matching decode GEMV under Nsight Compute: DRAM, issue slots,
#                        occupancy, stall reasons, what bounds it) into $OUT/ncu_gemv.{md,json}
#   BENCH_NCU_ATTENTION  a kernels_attention layout, e.g. "qwen2.5": `benchmarks.ncu_gemv --attention` on its
#                        decode attention at tg128's late case in the default, re-tiled (with and without
#                        pipelining) and heads-apart forms into $OUT/ncu_attention.{md,json}
#   BENCH_GEMV           a kernels_gemv shape filter, e.g. "phi-3" (or "all"): before the models,
#                        `benchmarks.kernels_gemv --ahead --round-trip-free` on the matching decode GEMVs (each alone:
#                        its default launch shape, the same loading ahead, and Q5_0/Q8_0 in the tile without
#                        shared-memory round trips) into $OUT/kernels_gemv.{md,json}; BENCH_GEMV_ARGS adds
#                        arguments (e.g. "--sweep --compact")
#   BENCH_ATTENTION      a kernels_attention layout filter, e.g. "gpt-oss" (or "all"): before the models,
#                        `benchmarks.kernels_attention` (one decode step's rope_attention alone in each of its
#                        forms, at tg128's cache and a long one) into $OUT/kernels_attention.{md,json}
#   BENCH_STREAM_PROBE   arguments for `benchmarks.stream_probe` (e.g. "--work 0 24 56 --block-n 32 64"): before the
#                        models, what the Q4_K GEMV's loads stream beside its decoding, into $OUT/stream_probe.{md,json}
#   BENCH_GEMV_BASE      with BENCH_GEMV: a second source tree (e.g. `git archive` of an earlier commit, carried
#                        untracked) timed by the same command in the same call, into $OUT/base/: a kernel
#                        change before and after on one machine
#   BENCH_PARITY         1: after llama-bench, the harness's parity scenarios (features/performance/parity.feature,
#                        M1) against the reference worker on the same shaped files, with this call's llama-bench as
#                        the yardstick (--llama-bench), into $OUT/parity.log (carry the quicktok wheel in
#                        fixtures/build/wheels for the GPT-OSS role's stand-in, as for .ci/gpu-conformance)
#   FIXTURES_DIR         where the shaped files are written (default /tmp/bench-fixtures)
#   BENCH_PYTHON         the Python to use (default python3)
set -uo pipefail

cd "$(dirname "$0")/.."
START=$SECONDS
OUT=${OUT:-benchmarks/results/latest}
DEADLINE=${BENCH_DEADLINE_S:-560}
LABEL=${BENCH_LABEL:-}
FIXTURES_DIR=${FIXTURES_DIR:-/tmp/bench-fixtures}
WORK=/tmp/bench-records
PY=${BENCH_PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK"
rm -f "$WORK"/*.json
exec > >(tee -a "$OUT/run.log") 2>&1

left() { echo $((DEADLINE - (SECONDS - START))); }
say() { echo "[run_gpu +$((SECONDS - START))s] $*"; }
# Whether an optional step asked for (named by $1) still fits before the deadline; says so when it does not.
fits() { (($(left) > 90)) && return 0; say "$1 skipped: $(left) s left before the deadline, it needs 90"; return 1; }

declare -A SHAPED=([qwen]=qwen2.5-0.5b [phi]=phi-3-mini [gpt-oss]=gpt-oss-20b)
declare -A FILE=([qwen]=qwen2.5-0.5b-q4_k_m [phi]=phi-3-mini-q4_k_m [gpt-oss]=gpt-oss-20b-mxfp4_moe)
MODELS=()
for arg in "${@:-qwen}"; do
    case "$arg" in
        all) MODELS+=(qwen phi gpt-oss) ;;
        qwen | phi | gpt-oss) MODELS+=("$arg") ;;
        *) echo "error: unknown model '$arg' (known: qwen, phi, gpt-oss, all)" >&2; exit 2 ;;
    esac
done
say "models: ${MODELS[*]}; deadline ${DEADLINE}s; label '${LABEL}'"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.mem,power.limit --format=csv || say "nvidia-smi not available"

# (c) llama.cpp first: the longest step, niced so it disturbs the worker's timings as little as possible.
BUILD_PID=
if [[ "${BENCH_SKIP_LLAMACPP:-0}" != 1 ]]; then
    nice -n 19 $PY -m benchmarks.llamacpp build >"$WORK/llamacpp-build.out" 2>&1 &
    BUILD_PID=$!
    say "llama.cpp build started (pid $BUILD_PID)"
fi

# (a) the carried wheels (fastapi, pydantic, gguf, ...), unless this Python already has them.
if ! $PY -c "import fastapi, gguf, pydantic, sse_starlette, uvicorn" 2>/dev/null; then
    if [[ ! -d /tmp/site/fastapi ]]; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
            || { say "error: wheel install failed"; exit 1; }
    fi
    export PYTHONPATH=/tmp/site
fi
$PY -c "import reference_worker.worker, fixtures.catalog" || { say "error: the worker cannot be imported here"; exit 1; }

# The CUDA tests asked for, before any timing: a tree whose kernels fail them is not worth measuring.
if [[ -n "${BENCH_TESTS:-}" ]]; then
    say "tiny fixtures and CUDA tests: ${BENCH_TESTS}"
    $PY -m fixtures prepare --tiny >/dev/null 2>&1 || say "tiny fixtures: some failed to build"
    # BENCH_TESTS is a list of pytest arguments in shell syntax: quoted ones stay one (-k 'q4_k or q6_k').
    # (no -q of its own: BENCH_TESTS may bring one, and at -qq pytest drops the summary line read below)
    eval "tests=(${BENCH_TESTS})"
    if ! $PY -m pytest -m cuda -p no:cacheprovider "${tests[@]}" >"$OUT/cuda-tests.log" 2>&1; then
        tail -n 30 "$OUT/cuda-tests.log"
        say "error: the CUDA tests failed; no benchmark"
        [[ -n "$BUILD_PID" ]] && kill "$BUILD_PID" 2>/dev/null
        exit 1
    fi
    tail -n 1 "$OUT/cuda-tests.log"
fi

# The prefill products alone, both paths and the GEMM's launch shapes (no model file needed).
if [[ "${BENCH_PREFILL_KERNELS:-0}" =~ ^(1|sweep)$ ]] && fits BENCH_PREFILL_KERNELS; then
    say "prefill products: scratch vs fused GEMM (BENCH_PREFILL_KERNELS=$BENCH_PREFILL_KERNELS)"
    sweep=()
    if [[ "$BENCH_PREFILL_KERNELS" == sweep ]]; then sweep=(--sweep); fi
    timeout "$(($(left) / 3))" $PY -m benchmarks.kernels_prefill ${sweep[@]+"${sweep[@]}"} --out "$OUT" \
        | tail -n 30 || say "prefill kernel benchmark failed or timed out"
fi

# What bounds the decode GEMVs, from the GPU's counters (no model file needed).
if [[ -n "${BENCH_NCU:-}" ]] && fits BENCH_NCU; then
    say "decode GEMVs under Nsight Compute: $BENCH_NCU"
    timeout "$(($(left) / 3))" $PY -m benchmarks.ncu_gemv --only "$BENCH_NCU" --out "$OUT" | tail -n 20 \
        || say "ncu_gemv failed or timed out"
fi

if [[ -n "${BENCH_NCU_ATTENTION:-}" ]] && fits BENCH_NCU_ATTENTION; then
    say "decode attention under Nsight Compute: $BENCH_NCU_ATTENTION"
    timeout "$(($(left) / 3))" $PY -m benchmarks.ncu_gemv --attention "$BENCH_NCU_ATTENTION" \
        --forms default re-tiled "re-tiled, not pipelined" "heads apart" --out "$OUT" | tail -n 8 \
        || say "ncu_gemv --attention failed or timed out"
fi

# The decode GEMVs alone: this tree's, and a base tree's in the same call (no model file needed).
if [[ -n "${BENCH_GEMV:-}" ]] && fits BENCH_GEMV; then
    only=()
    if [[ "$BENCH_GEMV" != all ]]; then only=(--only "$BENCH_GEMV"); fi
    out_abs=$(cd "$OUT" && pwd)
    for tree in . ${BENCH_GEMV_BASE:-}; do
        dest="$out_abs" ahead=(--ahead --round-trip-free)
        if [[ "$tree" != . ]]; then dest="$out_abs/base" ahead=(); fi  # an earlier tree may not know --ahead
        say "decode GEMVs alone ($tree): ${BENCH_GEMV} ${BENCH_GEMV_ARGS:-}"
        # shellcheck disable=SC2086  # BENCH_GEMV_ARGS is a list of arguments
        (cd "$tree" && timeout "$(($(left) / 3))" $PY -m benchmarks.kernels_gemv ${ahead[@]+"${ahead[@]}"} \
            ${only[@]+"${only[@]}"} ${BENCH_GEMV_ARGS:-} --out "$dest") | tail -n 30 \
            || say "kernels_gemv ($tree) failed or timed out"
    done
fi

# The decode attention alone, in each of its forms (no model file needed).
if [[ -n "${BENCH_ATTENTION:-}" ]] && fits BENCH_ATTENTION; then
    only=()
    if [[ "$BENCH_ATTENTION" != all ]]; then only=(--only "$BENCH_ATTENTION"); fi
    say "decode attention alone: ${BENCH_ATTENTION}"
    timeout "$(($(left) / 4))" $PY -m benchmarks.kernels_attention ${only[@]+"${only[@]}"} --out "$OUT" \
        | tail -n 110 || say "kernels_attention failed or timed out"
fi

# What the Q4_K GEMV's loads stream apart from its decoding (no model file needed).
if [[ -n "${BENCH_STREAM_PROBE:-}" ]] && fits BENCH_STREAM_PROBE; then
    say "stream probe: ${BENCH_STREAM_PROBE}"
    # shellcheck disable=SC2086  # BENCH_STREAM_PROBE is a list of arguments
    timeout "$(($(left) / 4))" $PY -m benchmarks.stream_probe ${BENCH_STREAM_PROBE} --out "$OUT" | tail -n 4 \
        || say "stream_probe failed or timed out (the shapes it finished are in $OUT)"
fi

# (b) + (d) per model: write the file, then benchmark the worker on it.
PATHS=()
for key in "${MODELS[@]}"; do
    if (($(left) < 30)); then say "deadline: skipping $key"; continue; fi
    say "fixture ${SHAPED[$key]}"
    $PY -m fixtures prepare --shaped "${SHAPED[$key]}" --out "$FIXTURES_DIR" || { say "fixture $key failed"; continue; }
    model="$FIXTURES_DIR/shaped/${FILE[$key]}.gguf"
    PATHS+=("$model")
    # In process; with BENCH_HTTP=1 then the same over HTTP/SSE (a worker process).
    modes=(in-process)
    if [[ "${BENCH_HTTP:-0}" == 1 ]]; then modes+=(http); fi
    for mode in "${modes[@]}"; do
        extra=(--verbose) suffix=""
        if [[ "$mode" == http ]]; then
            (($(left) > 60)) || { say "deadline: no HTTP run for $key"; break; }
            extra=(--http) suffix="-http"
        fi
        say "worker decode benchmark ($mode): $key"
        # shellcheck disable=SC2086  # BENCH_DECODE_ARGS is a list of arguments
        timeout --signal=INT "$(($(left) - 20))" $PY -m benchmarks.decode --model "$model" --label "$LABEL" \
            "${extra[@]}" --out "$WORK/worker-$key$suffix.json" ${BENCH_DECODE_ARGS:---time-budget-s 60} \
            ${BENCH_WORKER_FLAGS:-} || say "worker benchmark $key ($mode) failed or timed out"
    done
    if [[ "${BENCH_PROFILE:-0}" == 1 ]] && (($(left) > 60)); then
        say "profile: $key"
        # shellcheck disable=SC2086  # BENCH_WORKER_FLAGS is a list of arguments
        timeout "$(($(left) - 40))" $PY -m benchmarks.profile_step --model "$model" --steps 16 --prefill-tokens 512 \
            ${BENCH_WORKER_FLAGS:-} --append "$OUT/profile.md" >/dev/null 2>&1 || say "profile $key failed or timed out"
    fi
    if [[ "${BENCH_STEP_AB:-0}" =~ ^(1|launch)$ ]] && (($(left) > 60)); then
        say "decode variants: $key"
        only=()
        if [[ "$BENCH_STEP_AB" == launch ]]; then only=(--launch-only); fi
        if [[ -n "${BENCH_STEP_AB_ONLY:-}" ]]; then
            # Texts separated by ';' (each names the variants holding all its words), else one word each.
            if [[ "$BENCH_STEP_AB_ONLY" == *";"* ]]; then
                IFS=';' read -ra filters <<<"$BENCH_STEP_AB_ONLY"
            else
                read -ra filters <<<"$BENCH_STEP_AB_ONLY"
            fi
            only+=(--only "${filters[@]}")
        fi
        timeout "$(($(left) - 40))" $PY -m benchmarks.step_ab --model "$model" --tokens 128 --reps 2 \
            ${only[@]+"${only[@]}"} >>"$OUT/step-ab.md" 2>&1 || say "step_ab $key failed or timed out"
    fi
    if [[ -n "${BENCH_STEP_BASE:-}" ]]; then
        # "default" names no variant but the default: the default kernels alone, in any tree with --only.
        for tree in . "$BENCH_STEP_BASE" . "$BENCH_STEP_BASE"; do
            (($(left) > 60)) || { say "deadline: no more step runs of $key against $BENCH_STEP_BASE"; break; }
            say "decode step, default kernels ($tree): $key"
            echo "### $key: $tree" >>"$OUT/step-ab.md"
            (cd "$tree" && timeout "$(($(left) - 40))" $PY -m benchmarks.step_ab --model "$model" --tokens 128 \
                --reps 2 --only default) 2>&1 | tail -n 3 >>"$OUT/step-ab.md" || say "step_ab ($tree) $key failed"
        done
    fi
done

# (e) llama-bench on the same files, once the build is done (or the deadline says stop waiting).
if [[ -n "$BUILD_PID" ]]; then
    while kill -0 "$BUILD_PID" 2>/dev/null && (($(left) > 25)); do sleep 5; done
    status=$($PY -m benchmarks.llamacpp status)
    say "$status"
    tail -n 5 "$WORK/llamacpp-build.out"
    if [[ "$status" == "llama-bench built"* ]] && ((${#PATHS[@]})) && (($(left) > 25)); then
        args=()
        for model in "${PATHS[@]}"; do args+=(--model "$model"); done
        $PY -m benchmarks.llamacpp bench "${args[@]}" --label "$LABEL" --timeout-s "$(($(left) - 15))" \
            --out "$WORK/llamacpp.json" || say "llama-bench failed"
    fi
    if [[ "${BENCH_PARITY:-0}" == 1 && "$status" == "llama-bench built"* ]] && (($(left) > 60)); then
        # The harness finds full-shape files under its fixtures dir's shaped/, beside the tiny stand-ins.
        say "parity scenarios: the worker against llama-bench (${status##*: })"
        # --real: GPT-OSS's real-vocabulary stand-in, from the quicktok wheel carried in fixtures/build/wheels.
        PIP_NO_INDEX=1 $PY -m fixtures prepare --tiny --real >/dev/null 2>&1 || say "tiny fixtures: some failed to build"
        [[ -e fixtures/build/shaped ]] || ln -s "$FIXTURES_DIR/shaped" fixtures/build/shaped
        timeout "$(($(left) - 20))" $PY -m pytest features/performance/parity.feature -p no:cacheprovider -rs -s \
            --llama-bench "${status##*: }" >"$OUT/parity.log" 2>&1
        tail -n 8 "$OUT/parity.log"
    fi
    if [[ "${BENCH_EXPORT_BUILD:-0}" == 1 && "$status" == *"(built in"* ]]; then
        $PY -m benchmarks.llamacpp export --out "$OUT" || say "build not exported"
    fi
fi

# (f) the report.
# report.json holds every record; the record files themselves come back only when the report fails.
records=("$WORK"/*.json)
if [[ ! -e "${records[0]}" ]]; then
    say "no records were written"
elif $PY -m benchmarks.report "${records[@]}" --title "GPU decode benchmark${LABEL:+ ($LABEL)}" \
    --out-md "$OUT/report.md" --out-json "$OUT/report.json" >/dev/null; then
    [[ -n "$BUILD_PID" ]] && printf '\n%s\n' "$($PY -m benchmarks.llamacpp status)" >>"$OUT/report.md"
    cat "$OUT/report.md"
else
    say "report failed; copying the records"
    cp "${records[@]}" "$OUT/"
fi
# The device returns at most 8 files from $OUT: past that, the JSON twins of Markdown results travel as one
# tarball (json.tar.gz), so no result is left behind.
outputs=("$OUT"/*)
if ((${#outputs[@]} > 8)); then
    twins=()
    for json in "$OUT"/*.json; do [[ -e "${json%.json}.md" ]] && twins+=("$(basename "$json")"); done
    if ((${#twins[@]})) && tar -C "$OUT" -czf "$OUT/json.tar.gz" "${twins[@]}"; then
        (cd "$OUT" && rm -f "${twins[@]}")
        say "more than 8 files: ${twins[*]} packed into json.tar.gz"
    fi
    outputs=("$OUT"/*)
    ((${#outputs[@]} > 8)) && say "warning: ${#outputs[@]} files in $OUT; the device returns 8"
fi
say "done"
