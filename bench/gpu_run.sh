#!/usr/bin/env bash
# The GPU benchmarks as a few suites (bench/README.md says how to run them on your own GPU).
#   bash bench/gpu_run.sh SUITE...          from the repository root
# SUITE:
#   check     versions, then every CUDA test of the fast path
#   clip      one clip per size: ours (fast decode, batched vision) against the plain decode and
#             stock transformers; empty and full memory
#   stream    an hour of stream per size: memory flat, per-clip latency over time
#   cameras   1 and 8 cameras on one model per size, batched: clips/s, a round's phases
#   ask       AskVideo latency at a full budget, idle and while 4 cameras caption
#   overlap   kept-set agreement of the bf16 fast path with the fp32 plain path
#   weights   int8 / int4 weights against native bf16: speed, memory, agreement
#   world     train the synthetic-world model ($WORLD_ARGS); the checkpoint comes back
#   regress   clip and cameras per size from this tree and from $BASELINE (a tree of another
#             commit, e.g. `git archive OLD rats_ros bench test | tar -x -C .baseline`), in turn
# Sizes: $SIZES (default "0.5b qwen3-vl-2b"; also 7b, qwen2.5-vl-3b, qwen2.5-vl-7b,
# qwen3-vl-8b, ... as bench/models.py lists). Without internet, a transformers wheel newer than
# the machine's goes in .whl/ (installed into /tmp/site first). Results: $OUT/results.jsonl (one
# JSON line per measurement, with the commit), $OUT/log.txt, per-bench JSON under $OUT/json.
set -u -o pipefail
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
fi
ROOT=$PWD
export PYTHONPATH=/tmp/site:$ROOT PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RATS_ROS_CACHE=${RATS_ROS_CACHE:-/tmp/rats_cache}
export RATS_GIT_COMMIT=${RATS_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
OUT=${OUT:-bench/out}
SIZES=${SIZES:-0.5b qwen3-vl-2b}
mkdir -p "$OUT/json"
RES="$OUT/results.jsonl"
LOG="$OUT/log.txt"
touch "$RES" "$LOG"
status=0

run() {  # run LIMIT_S CMD...: one bench with its own time limit; a failure is recorded, not fatal
    local limit=$1; shift
    echo "### $*" | tee -a "$LOG"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    [ $rc -ne 0 ] && { echo "### FAILED rc=$rc: $*" | tee -a "$LOG"; status=1; }
    return 0
}

suite_check() {
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv \
        | tee -a "$LOG"
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers',
transformers.__version__, torch.cuda.get_device_name())" | tee -a "$LOG"
    run 420 python3 -m pytest -q -rs -p no:cacheprovider -k cuda test/test_fast_decode.py \
        test/test_batch_decode.py test/test_fused_decode.py test/test_fast_vision.py \
        test/test_siglip.py test/test_quant.py test/test_backends.py test/test_readout.py
}

suite_clip() {  # clip [EXTRA ARGS]: per size; REPEATS (default 5)
    for size in $SIZES; do
        run 300 python3 bench/bench_clip.py --size "$size" --repeats "${REPEATS:-5}" \
            --out "$RES" --json "$OUT/json/clip_$size.json" "$@"
    done
}

suite_stream() {
    for size in $SIZES; do
        run 500 python3 bench/bench_stream.py --size "$size" --variant ours --hours 1 \
            --out "$RES" --json "$OUT/json/stream_$size.json"
    done
}

suite_cameras() {  # cameras [EXTRA ARGS]: per size
    for size in $SIZES; do
        run 240 python3 bench/bench_cameras.py --size "$size" --cameras 1,8 --modes batched \
            --rounds "${ROUNDS:-4}" --prepare --out "$RES" "$@"
    done
}

suite_ask() {
    for size in $SIZES; do
        run 300 python3 bench/bench_ask.py --size "$size" --out "$RES"
        run 200 python3 bench/bench_busy_ask.py --size "$size" --cameras 4 --out "$RES"
    done
}

suite_overlap() {
    for size in $SIZES synthetic-world; do
        run 300 python3 bench/bench_overlap.py --size "$size" --clips 8 --out "$RES" \
            --json "$OUT/json/overlap_$size.json"
    done
}

suite_weights() {
    run 300 python3 bench/bench_weights.py --kernels --sizes $SIZES --stream-clips 16 \
        --world-clips 0 --out "$RES"
}

suite_world() {
    run 580 python3 -m rats_ros.world.train "$OUT/synthetic_world" ${WORLD_ARGS:-}
}

suite_regress() {  # this tree and $BASELINE (commit $BASELINE_COMMIT) in turn, $PAIRS times
    [ -d "${BASELINE:-}" ] || { echo "regress needs BASELINE=<a tree of another commit>"; return 1; }
    local tree commit size trees=()
    for _ in $(seq "${PAIRS:-2}"); do trees+=("$BASELINE" "$ROOT"); done  # twice: the spread shows
    for tree in "${trees[@]}"; do
        commit=$([ "$tree" = "$ROOT" ] && echo "$RATS_GIT_COMMIT" || echo "${BASELINE_COMMIT:-baseline}")
        for size in $SIZES; do
            run 150 env PYTHONPATH="/tmp/site:$tree" RATS_GIT_COMMIT="$commit" \
                python3 "$tree/bench/bench_clip.py" --size "$size" --variants ours \
                --states full --repeats "${REPEATS:-5}" --out "$RES"
            run 150 env PYTHONPATH="/tmp/site:$tree" RATS_GIT_COMMIT="$commit" \
                python3 "$tree/bench/bench_cameras.py" --size "$size" --cameras 1,8 \
                --modes batched --rounds "${ROUNDS:-3}" --out "$RES"
        done
    done
    python3 bench/regress.py "$RES" --baseline "${BASELINE_COMMIT:-baseline}" | tee -a "$LOG"
}

for suite in "${@:-check}"; do
    case $suite in
        check|clip|stream|cameras|ask|overlap|weights|world|regress) "suite_$suite" ;;
        *) echo "unknown suite $suite (check clip stream cameras ask overlap weights world" \
                "regress)" | tee -a "$LOG"; status=1 ;;
    esac
done
python3 bench/run_all.py --table "$RES" 2>>"$LOG" | tail -40
exit $status
