#!/usr/bin/env bash
# The one script sent to the GPU machine (see bench/README.md). Runs from the repository root.
#   RATS_GIT_COMMIT=$(git rev-parse HEAD) bash bench/gpu_run.sh PHASE...
# PHASE: check (versions, CUDA tests of the fast path) | clip | stream | stream10h | ask
#        | qwen (Qwen2.5-VL 3B/7B, Qwen3-VL 2B/8B per clip, 16 frames of 640x480: fast decode
#          and batched vision against plain decode and transformers' per-segment vision)
#        | overlap (kept-set agreement of the bf16 fast path with the fp32 plain path)
#        | cameras (N = 1, 2, 4, 8 cameras on one model, round robin: clips/s and per clip)
#        | weights (int8 / int4 against bf16: kernels, LLaVA-OV-7B, Qwen2.5-VL-7B; and busyask
#          at 7B, to fit one 10-minute call)
#        | qwenlong (Qwen2.5-VL-7B / Qwen3-VL-8B 1 h streams, AskVideo at 1 h)
#        | round5 (2 GPUs: qwenlong on one; busyask 7B / 0.5B and overlap synthetic-world on the
#          other) | round6 (round5 again, Qwen towers with and without the patch product, SigLIP)
#        | round7 (Qwen towers: padded MLP and varlen attention, each undone; LLaVA-OV per clip)
#        | round8 (Qwen towers with fused RoPE and RMSNorm, each part undone)
#        | round9 (Qwen2.5-VL-3B, Qwen3-VL-2B/4B at 1 h and in AskVideo; Qwen3-VL-4B per clip)
#        | round10 (cameras together with the packed prefill: 0.5B, 7B, Qwen3-VL-2B)
#        | round11 (the fused decode step against the torch step: tests, per clip, profiles)
#        | round12 (round11 with the fused products' tiles swept per shape: bench_fused)
#        | round13 (the fused step with timed tiles against the torch step, every size)
#        | round14 (round13 with the fused decode attention)
#        | round15 (the Qwen towers' RoPE kernel against the torch RoPE)
#        | round16 (cameras together again, one camera's decode now fused)
#        | round17 (cameras together on the fused batched step, against its torch step)
#        | round18 (Qwen clips encoded together, against one by one; an hour of 8 cameras)
#        | closing4 (every CUDA test; cameras 1-8 at four sizes, each step against its baseline)
#        | camprofile (where a round of 8 cameras' time goes: phases and kernels)
#        | round19 (the batched products' pipeline depth among the timed tiles)
#        | round20 (SigLIP: GELU in fc1's epilogue, cuDNN attention first; against stock)
#        | closing5 (the pruned batched tiles: CUDA tests; cameras 1 and 8 on a fresh machine,
#          with the first round's time: tiles timed and compiled cold)
#        | closing6 (one GPU: the layer's products through one helper (tiles.step_out): CUDA
#          tests of the decode steps; cameras 1 and 8 at 0.5B and Qwen3-VL-2B)
#        | closing7 (one GPU, fresh machine: the decoders built before the first clip, as a
#          node's configure does, against built by the first clips; a cold Triton cache each)
#        | decodetests (the CUDA tests of the one-row, fused and batched decode steps)
#        | closing3 (every CUDA test; per clip with the decoder's build time)
#        | qwen25hour (Qwen2.5-VL 3B / 7B for an hour on the fused step)
#        | closing2 (the fused step: every CUDA test, 1 h streams, AskVideo, the 3B clip again)
#        | closing (every CUDA test; LLaVA-OV 0.5B / 7B and Qwen2.5-VL-7B per clip)
#        | camerahour (8 / 4 cameras together for an hour each: memory flat?)
#        | busyask (AskVideo p50/p99 while 4 cameras caption, against idle: 0.5B and 7B)
#        | round3 (one 10-minute call: Qwen per clip, busyask 7B, int4 7B)
#        | round4 (kernels, int8/int4 on the trained synthetic-world, Qwen2.5-VL-3B per clip)
#        | batched (cameras decoded together against round robin, 0.5B and 7B)
#        | attn (cuDNN vs flash prefill) | confirm (= check clip ask) | all (= check clip stream)
#        | final (check; ours/stock/full clips; ours ask; 1 h streams)
#        | worldprobe (300 training steps of synthetic-world: speed) | world (train it with
#          $WORLD_ARGS; the checkpoint comes back in the archive) | worlds (two recipes at once)
# Results: $OUT/results.jsonl (one JSON line per measurement), per-bench JSON with per-clip rows,
# and a log; all packed into $OUT/bench_out.tar.gz (the device returns at most 8 files).
set -u -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RATS_ROS_CACHE=/tmp/rats_cache
OUT=${OUT:-bench/out}
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

cameras_two_gpus() {  # cameras_two_gpus tests|none BENCH_CAMERAS_ARGS...: a 2-GPU machine.
    # GPU 0: the CUDA tests of the fused and batched decode (with "tests"), then cameras at 0.5B
    # and Qwen3-VL-2B (4 rounds); GPU 1: cameras at 7B and Qwen2.5-VL-3B (2 rounds)
    local tests=$1; shift
    (export CUDA_VISIBLE_DEVICES=0
     [ "$tests" = tests ] && run 200 python3 -m pytest -q -rs -p no:cacheprovider \
         test/test_fused_decode.py test/test_batch_decode.py -k cuda
     run 150 python3 bench/bench_cameras.py --size 0.5b --rounds 4 "$@"
     run 150 python3 bench/bench_cameras.py --size qwen3-vl-2b --rounds 4 "$@") &
    (export CUDA_VISIBLE_DEVICES=1
     run 200 python3 bench/bench_cameras.py --size 7b --rounds 2 "$@"
     run 150 python3 bench/bench_cameras.py --size qwen2.5-vl-3b --rounds 2 "$@") &
    wait
}

phase_check() {
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv \
        | tee -a "$LOG"
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers',
transformers.__version__, torch.cuda.get_device_name())" | tee -a "$LOG"
    run 240 python3 -m pytest -q -rs -p no:cacheprovider test/test_fast_decode.py
}

clip() {  # clip SIZE REPEATS [extra args]
    local size=$1 reps=$2; shift 2
    run 420 python3 bench/bench_clip.py --size "$size" --repeats "$reps" --out "$RES" \
        --json "$OUT/json/clip_$size.json" "$@"
}

stream() {  # stream SIZE VARIANT CLIPS|HOURS-ARG...
    local size=$1 variant=$2; shift 2
    run 500 python3 bench/bench_stream.py --size "$size" --variant "$variant" --out "$RES" \
        --json "$OUT/json/stream_${size}_${variant}_${1#--}$2.json" "$@"
}

for phase in "${@:-all}"; do
    case $phase in
        check) phase_check ;;
        decodetests) run 300 python3 -m pytest -q -rs -p no:cacheprovider \
                         test/test_fused_decode.py test/test_fast_decode.py \
                         test/test_batch_decode.py -k cuda ;;
        clip) clip 0.5b 5 --profile; clip 7b 3 --profile ;;
        clip05) clip 0.5b 5 ;;
        clip7) clip 7b 3 ;;
        stream) stream 0.5b ours --hours 1; stream 0.5b full --clips 24
                stream 7b ours --hours 1; stream 7b full --clips 20 ;;
        stream10h) stream 0.5b ours --hours 10 ;;
        worldprobe) run 300 python3 -m rats_ros.world.train "$OUT/probe" --steps 300 ;;
        world) run 580 python3 -m rats_ros.world.train "$OUT/synthetic_world" ${WORLD_ARGS:-} ;;
        worlds) # two recipes side by side, one a GPU (a 2-GPU machine): $WORLD_A/B_ARGS
                CUDA_VISIBLE_DEVICES=0 run 580 python3 -m rats_ros.world.train "$OUT/world_a" \
                    ${WORLD_A_ARGS:-} &
                CUDA_VISIBLE_DEVICES=1 run 580 python3 -m rats_ros.world.train "$OUT/world_b" \
                    ${WORLD_B_ARGS:-} &
                wait ;;
        qwen) run 60 python3 -m pytest -q -rs -p no:cacheprovider test/test_fast_vision.py
              # the workload: 16 frames of 640x480, memory full; batched vs stock vision
              clip qwen2.5-vl-7b 3 --variants ours ours_stock_vision plain --states full \
                  --side 480 --width 640
              for size in qwen3-vl-2b qwen3-vl-8b; do
                  clip "$size" 3 --variants ours ours_stock_vision --states full --side 480 \
                      --width 640
              done
              clip qwen2.5-vl-3b 3 --variants ours --states full --side 480 --width 640 ;;
        overlap) run 120 python3 -m pytest -q -rs -p no:cacheprovider test/test_fast_decode.py \
                     -k cuda
                 for size in tiny 0.5b 7b; do
                     run 400 python3 bench/bench_overlap.py --size "$size" --clips 8 \
                         --out "$RES" --json "$OUT/json/overlap_$size.json"
                 done ;;
        cameras) run 400 python3 bench/bench_cameras.py --size 0.5b --out "$RES"
                 run 500 python3 bench/bench_cameras.py --size 7b --rounds 4 --out "$RES" ;;
        weights) run 90 python3 -m pytest -q -rs -p no:cacheprovider test/test_quant.py \
                     test/test_fast_vision.py test/test_fast_decode.py -k "cuda or quant or vision"
                 run 260 python3 bench/bench_weights.py --kernels --sizes 7b --stream-clips 112 \
                     --world-clips 0 --out "$RES"
                 run 150 python3 bench/bench_busy_ask.py --size 7b --cameras 4 --out "$RES"
                 run 110 python3 bench/bench_weights.py --sizes qwen2.5-vl-7b --stream-clips 16 \
                     --world-clips 0 --out "$RES" ;;
        round3) run 40 python3 -m pytest -q -rs -p no:cacheprovider test/test_quant.py -k cuda
                q="--states full --side 480 --width 640 --repeats 3 --warmup 1 --out $RES"
                run 110 python3 bench/bench_clip.py --size qwen2.5-vl-7b \
                    --variants ours ours_stock_vision plain $q --json "$OUT/json/clip_q25_7b.json"
                run 70 python3 bench/bench_clip.py --size qwen3-vl-2b \
                    --variants ours ours_stock_vision $q --json "$OUT/json/clip_q3_2b.json"
                run 100 python3 bench/bench_clip.py --size qwen3-vl-8b \
                    --variants ours ours_stock_vision $q --json "$OUT/json/clip_q3_8b.json"
                run 130 python3 bench/bench_busy_ask.py --size 7b --cameras 4 --out "$RES"
                run 140 python3 bench/bench_weights.py --sizes 7b --formats int4 \
                    --stream-clips 112 --world-clips 0 --out "$RES" ;;
        round4) run 150 python3 bench/bench_weights.py --kernels --sizes --world-clips 30 \
                    --out "$RES"
                run 100 python3 bench/bench_clip.py --size qwen2.5-vl-3b --variants ours \
                    --states full --side 480 --width 640 --repeats 3 --warmup 1 --out "$RES" ;;
        batched) run 60 python3 -m pytest -q -rs -p no:cacheprovider test/test_batch_decode.py \
                     -k cuda
                 run 80 python3 bench/bench_cameras.py --size 0.5b --rounds 4 --out "$RES"
                 run 110 python3 bench/bench_cameras.py --size 7b --rounds 2 --cameras 1,4,8 \
                     --out "$RES" ;;
        qwenlong) # Qwen at 1 h: memory over the stream, AskVideo at 1 h of captions (not run yet)
                  stream qwen2.5-vl-7b ours --hours 1; stream qwen3-vl-8b ours --hours 1
                  run 400 python3 bench/bench_ask.py --size qwen2.5-vl-7b --variants ours \
                      --repeats 3 --out "$RES" ;;
        round5) # a 2-GPU machine: Qwen at 1 h on GPU 0; answers first and kept sets on GPU 1
                (export CUDA_VISIBLE_DEVICES=0
                 run 190 python3 bench/bench_stream.py --size qwen2.5-vl-7b --variant ours \
                     --hours 1 --out "$RES" --json "$OUT/json/stream_q25_7b.json"
                 run 190 python3 bench/bench_stream.py --size qwen3-vl-8b --variant ours \
                     --hours 1 --out "$RES" --json "$OUT/json/stream_q3_8b.json"
                 run 180 python3 bench/bench_ask.py --size qwen2.5-vl-7b --variants ours \
                     --repeats 3 --out "$RES") &
                (export CUDA_VISIBLE_DEVICES=1
                 run 60 python3 -m pytest -q -rs -p no:cacheprovider test/test_fast_decode.py \
                     test/test_batch_decode.py -k "cuda or aside"
                 run 230 python3 bench/bench_busy_ask.py --size 7b --cameras 4 --out "$RES"
                 run 100 python3 bench/bench_overlap.py --size synthetic-world --clips 8 \
                     --out "$RES" --json "$OUT/json/overlap_world.json"
                 run 140 python3 bench/bench_busy_ask.py --size 0.5b --cameras 4 --out "$RES") &
                wait ;;
        round6) # a 2-GPU machine: round5's Qwen hour, Qwen towers profiled with and without the
                # patch product (GPU 0); answers first at 1 s gaps and back to back, SigLIP (GPU 1)
                q="--states full --side 480 --width 640 --repeats 3 --warmup 1 --out $RES"
                (export CUDA_VISIBLE_DEVICES=0
                 run 190 python3 bench/bench_stream.py --size qwen2.5-vl-7b --variant ours \
                     --hours 1 --out "$RES" --json "$OUT/json/stream_q25_7b.json"
                 run 190 python3 bench/bench_stream.py --size qwen3-vl-8b --variant ours \
                     --hours 1 --out "$RES" --json "$OUT/json/stream_q3_8b.json"
                 run 120 python3 bench/bench_ask.py --size qwen2.5-vl-7b --variants ours \
                     --repeats 3 --out "$RES"
                 run 110 python3 bench/bench_clip.py --size qwen2.5-vl-7b --profile \
                     --variants ours ours_conv3d ours_stock_vision $q
                 run 80 python3 bench/bench_clip.py --size qwen2.5-vl-3b --variants ours \
                     ours_conv3d $q) &
                (export CUDA_VISIBLE_DEVICES=1
                 run 60 python3 -m pytest -q -rs -p no:cacheprovider test/test_fast_decode.py \
                     test/test_batch_decode.py test/test_fast_vision.py -k "cuda or aside or patch"
                 run 150 python3 bench/bench_busy_ask.py --size 7b --cameras 4 --out "$RES"
                 run 120 python3 bench/bench_busy_ask.py --size 7b --cameras 4 --gap-s 0 \
                     --out "$RES"
                 run 80 python3 bench/bench_overlap.py --size synthetic-world --clips 8 \
                     --out "$RES" --json "$OUT/json/overlap_world.json"
                 run 80 python3 bench/bench_clip.py --size qwen3-vl-2b --variants ours \
                     ours_conv3d $q
                 run 90 python3 bench/bench_clip.py --size qwen3-vl-8b --variants ours \
                     ours_conv3d $q
                 run 60 python3 bench/bench_clip.py --size 7b --variants ours --states full \
                     --repeats 2 --warmup 1 --profile --out "$RES") &
                wait ;;
        round7) # a 2-GPU machine: the Qwen towers with the padded MLP and the varlen kernel,
                # each undone in turn (same run); LLaVA-OV per clip as the no-regression check
                q="--states full --side 480 --width 640 --repeats 3 --warmup 1 --out $RES"
                (export CUDA_VISIBLE_DEVICES=0
                 run 150 python3 bench/bench_clip.py --size qwen2.5-vl-7b --profile \
                     --variants ours ours_unpadded ours_grouped ours_stock_vision $q
                 run 110 python3 bench/bench_clip.py --size qwen2.5-vl-3b --variants ours \
                     ours_unpadded ours_grouped $q
                 run 100 python3 bench/bench_clip.py --size 0.5b --variants ours --states full \
                     --repeats 5 --warmup 2 --out "$RES") &
                (export CUDA_VISIBLE_DEVICES=1
                 run 60 python3 -m pytest -q -rs -p no:cacheprovider test/test_fast_vision.py \
                     test/test_fast_decode.py -k "cuda or patch or padded"
                 run 110 python3 bench/bench_clip.py --size qwen3-vl-2b --profile --variants \
                     ours ours_grouped $q
                 run 120 python3 bench/bench_clip.py --size qwen3-vl-8b --variants ours \
                     ours_grouped $q
                 run 100 python3 bench/bench_clip.py --size 7b --variants ours --states full \
                     --repeats 3 --warmup 2 --out "$RES") &
                wait ;;
        round8) # a 2-GPU machine: the Qwen towers with fused RoPE and RMSNorm (each part undone
                # in turn, same run); the CUDA tests of the towers first
                q="--states full --side 480 --width 640 --repeats 3 --warmup 1 --out $RES"
                (export CUDA_VISIBLE_DEVICES=0
                 run 60 python3 -m pytest -q -rs -p no:cacheprovider test/test_fast_vision.py
                 run 160 python3 bench/bench_clip.py --size qwen2.5-vl-7b --profile \
                     --variants ours ours_unfused ours_unpadded ours_grouped $q
                 run 80 python3 bench/bench_clip.py --size qwen3-vl-2b --variants ours \
                     ours_unfused $q) &
                (export CUDA_VISIBLE_DEVICES=1
                 run 120 python3 bench/bench_clip.py --size qwen2.5-vl-3b --variants ours \
                     ours_unfused $q
                 run 120 python3 bench/bench_clip.py --size qwen3-vl-8b --variants ours \
                     ours_unfused $q) &
                wait ;;
        round9) # a 2-GPU machine: the Qwen sizes not measured yet at 1 h and in AskVideo, and
                # Qwen3-VL-4B per clip; the plain (per-token) decode beside ours in each run
                q="--states full --side 480 --width 640 --repeats 3 --warmup 1 --out $RES"
                (export CUDA_VISIBLE_DEVICES=0
                 run 110 python3 bench/bench_clip.py --size qwen3-vl-4b --variants ours \
                     ours_stock_vision plain $q
                 run 120 python3 bench/bench_stream.py --size qwen2.5-vl-3b --variant ours \
                     --hours 1 --out "$RES" --json "$OUT/json/stream_q25_3b.json"
                 run 120 python3 bench/bench_stream.py --size qwen3-vl-4b --variant ours \
                     --hours 1 --out "$RES" --json "$OUT/json/stream_q3_4b.json"
                 run 120 python3 bench/bench_ask.py --size qwen3-vl-8b --repeats 3 \
                     --out "$RES") &
                (export CUDA_VISIBLE_DEVICES=1
                 run 120 python3 bench/bench_stream.py --size qwen3-vl-2b --variant ours \
                     --hours 1 --out "$RES" --json "$OUT/json/stream_q3_2b.json"
                 for size in qwen2.5-vl-3b qwen3-vl-2b qwen3-vl-4b; do
                     run 90 python3 bench/bench_ask.py --size "$size" --repeats 3 --out "$RES"
                 done
                 run 100 python3 bench/bench_clip.py --size qwen2.5-vl-3b --variants ours \
                     plain $q) &
                wait ;;
        round10) # a 2-GPU machine: cameras captioned together with the packed prefill
                 (export CUDA_VISIBLE_DEVICES=0
                  run 90 python3 -m pytest -q -rs -p no:cacheprovider test/test_batch_decode.py \
                      -k cuda
                  run 150 python3 bench/bench_cameras.py --size 0.5b --rounds 4 --out "$RES"
                  run 150 python3 bench/bench_cameras.py --size qwen3-vl-2b --rounds 2 \
                      --cameras 1,4,8 --out "$RES") &
                 (export CUDA_VISIBLE_DEVICES=1
                  run 200 python3 bench/bench_cameras.py --size 7b --rounds 2 --cameras 1,4,8 \
                      --out "$RES") &
                 wait ;;
        round11) # a 2-GPU machine: the fused decode step (Triton) against the torch step, in the
                 # same run: CUDA tests, per clip with kernel profiles (Qwen3-VL-2B, Qwen2.5-VL-3B,
                 # LLaVA-OV 0.5B / 7B, Qwen2.5-VL-7B)
                 q="--states full --side 480 --width 640 --repeats 3 --warmup 1 --out $RES"
                 v="--variants ours ours_torch_step"
                 python3 -c "import triton; print('triton', triton.__version__)" | tee -a "$LOG"
                 (export CUDA_VISIBLE_DEVICES=0
                  run 150 python3 -m pytest -q -rs -p no:cacheprovider test/test_fused_decode.py \
                      test/test_fast_decode.py test/test_batch_decode.py -k "cuda or fused"
                  run 100 python3 bench/bench_clip.py --size qwen3-vl-2b --profile $v $q
                  run 100 python3 bench/bench_clip.py --size 0.5b $v --states full --repeats 5 \
                      --warmup 2 --out "$RES") &
                 (export CUDA_VISIBLE_DEVICES=1
                  run 110 python3 bench/bench_clip.py --size qwen2.5-vl-3b --profile $v $q
                  run 120 python3 bench/bench_clip.py --size qwen2.5-vl-7b $v $q
                  run 100 python3 bench/bench_clip.py --size 7b $v --states full --repeats 3 \
                      --warmup 2 --out "$RES") &
                 wait ;;
        round12) # a 2-GPU machine: the fused products' tiles swept per shape (bench_fused), the
                 # CUDA tests, and per clip with the default tiles against the torch step
                 q="--states full --side 480 --width 640 --repeats 3 --warmup 1 --out $RES"
                 v="--variants ours ours_torch_step"
                 (export CUDA_VISIBLE_DEVICES=0
                  run 100 python3 -m pytest -q -rs -p no:cacheprovider test/test_fused_decode.py \
                      test/test_fast_decode.py -k "cuda or fused"
                  run 240 python3 bench/bench_fused.py --sweep --sizes 0.5b qwen3-vl-2b \
                      qwen2.5-vl-3b --out "$RES"
                  run 90 python3 bench/bench_clip.py --size qwen3-vl-2b --profile $v $q) &
                 (export CUDA_VISIBLE_DEVICES=1
                  run 240 python3 bench/bench_fused.py --sweep --sizes 7b qwen3-vl-8b --out "$RES"
                  run 100 python3 bench/bench_clip.py --size qwen2.5-vl-3b --profile $v $q
                  run 100 python3 bench/bench_clip.py --size 7b $v --states full --repeats 3 \
                      --warmup 2 --out "$RES") &
                 wait ;;
        round13|round14) # a 2-GPU machine (round14: again, with the fused decode attention):
                 # the fused step with tiles timed per GPU (tiles.py) against the torch step, per
                 # clip, every size; the CUDA tests; bench_fused beyond L2
                 q="--states full --side 480 --width 640 --repeats 3 --warmup 1 --out $RES"
                 v="--variants ours ours_torch_step"
                 (export CUDA_VISIBLE_DEVICES=0
                  run 120 python3 -m pytest -q -rs -p no:cacheprovider test/test_fused_decode.py \
                      test/test_fast_decode.py test/test_batch_decode.py -k "cuda or fused"
                  run 90 python3 bench/bench_clip.py --size qwen3-vl-2b --profile $v $q
                  run 90 python3 bench/bench_clip.py --size qwen2.5-vl-3b --profile $v $q
                  run 90 python3 bench/bench_clip.py --size 0.5b $v --states full --repeats 5 \
                      --warmup 2 --out "$RES"
                  run 120 python3 bench/bench_fused.py --out "$RES") &
                 (export CUDA_VISIBLE_DEVICES=1
                  run 100 python3 bench/bench_clip.py --size 7b $v --states full --repeats 3 \
                      --warmup 2 --out "$RES"
                  run 120 python3 bench/bench_clip.py --size qwen2.5-vl-7b $v $q
                  run 120 python3 bench/bench_clip.py --size qwen3-vl-8b $v $q
                  run 100 python3 bench/bench_clip.py --size qwen3-vl-4b $v $q) &
                 wait ;;
        closing) # a 2-GPU machine: every CUDA test at the closing commit, and the headline clips
                 q="--states full --side 480 --width 640 --repeats 3 --warmup 1 --out $RES"
                 (export CUDA_VISIBLE_DEVICES=0
                  run 200 python3 -m pytest -q -rs -p no:cacheprovider test/test_fast_decode.py \
                      test/test_batch_decode.py test/test_fast_vision.py test/test_quant.py \
                      test/test_backends.py -k "cuda or aside or patch or padded"
                  run 100 python3 bench/bench_clip.py --size 0.5b --variants ours --states full \
                      --repeats 5 --warmup 2 --out "$RES") &
                 (export CUDA_VISIBLE_DEVICES=1
                  run 120 python3 bench/bench_clip.py --size qwen2.5-vl-7b --variants ours $q
                  run 100 python3 bench/bench_clip.py --size 7b --variants ours --states full \
                      --repeats 3 --warmup 2 --out "$RES") &
                 wait ;;
        closing2) # a 2-GPU machine, the fused step's closing run: every CUDA test, 1 h streams
                  # (memory flat?), AskVideo at 1 h (answers decode fused too), the 3B clip again
                  q="--states full --side 480 --width 640 --repeats 5 --warmup 2 --out $RES"
                  (export CUDA_VISIBLE_DEVICES=0
                   run 200 python3 -m pytest -q -rs -p no:cacheprovider test/test_fused_decode.py \
                       test/test_fast_decode.py test/test_batch_decode.py test/test_fast_vision.py \
                       test/test_quant.py test/test_backends.py \
                       -k "cuda or aside or patch or padded or fused"
                   run 150 python3 bench/bench_stream.py --size 0.5b --variant ours --hours 1 \
                       --out "$RES" --json "$OUT/json/stream_05b.json") &
                  (export CUDA_VISIBLE_DEVICES=1
                   run 150 python3 bench/bench_stream.py --size qwen3-vl-2b --variant ours \
                       --hours 1 --out "$RES" --json "$OUT/json/stream_q3_2b.json"
                   run 150 python3 bench/bench_ask.py --size qwen2.5-vl-7b --variants ours \
                       --repeats 3 --out "$RES"
                   run 100 python3 bench/bench_clip.py --size qwen2.5-vl-3b --variants ours \
                       ours_torch_step $q) &
                  wait ;;
        round15) # a 2-GPU machine: the Qwen towers' RoPE as one Triton kernel against the torch
                 # RoPE (same run), per clip and profiled; the CUDA tests of the towers
                 q="--states full --side 480 --width 640 --repeats 3 --warmup 1 --out $RES"
                 v="--variants ours ours_torch_rope"
                 (export CUDA_VISIBLE_DEVICES=0
                  run 100 python3 -m pytest -q -rs -p no:cacheprovider test/test_fast_vision.py \
                      test/test_fused_decode.py -k "cuda or rope or fused"
                  run 90 python3 bench/bench_clip.py --size qwen3-vl-2b --profile $v $q
                  run 90 python3 bench/bench_clip.py --size qwen2.5-vl-3b --profile $v $q) &
                 (export CUDA_VISIBLE_DEVICES=1
                  run 120 python3 bench/bench_clip.py --size qwen2.5-vl-7b --profile $v $q
                  run 120 python3 bench/bench_clip.py --size qwen3-vl-8b --profile $v $q
                  run 100 python3 bench/bench_clip.py --size qwen3-vl-4b $v $q) &
                 wait ;;
        round16) # a 2-GPU machine: cameras captioned together again, now that one camera's
                 # decode is the fused step (batched rounds keep the torch step)
                 (export CUDA_VISIBLE_DEVICES=0
                  run 100 python3 -m pytest -q -rs -p no:cacheprovider test/test_batch_decode.py \
                      -k cuda
                  run 150 python3 bench/bench_cameras.py --size 0.5b --rounds 4 --cameras 1,8 \
                      --out "$RES"
                  run 150 python3 bench/bench_cameras.py --size qwen3-vl-2b --rounds 2 \
                      --cameras 1,8 --out "$RES") &
                 (export CUDA_VISIBLE_DEVICES=1
                  run 250 python3 bench/bench_cameras.py --size 7b --rounds 2 --cameras 1,8 \
                      --out "$RES") &
                 wait ;;
        round17) # a 2-GPU machine: the batched decode on the fused Triton step (fused_batch)
                 # against the batched torch step, in the same run; the CUDA tests first
                 m="--modes batched batched_torch_step --cameras 1,8 --out $RES"
                 (export CUDA_VISIBLE_DEVICES=0
                  run 200 python3 -m pytest -q -rs -p no:cacheprovider test/test_fused_decode.py \
                      test/test_batch_decode.py -k cuda
                  run 150 python3 bench/bench_cameras.py --size 0.5b --rounds 4 $m
                  run 150 python3 bench/bench_cameras.py --size qwen3-vl-2b --rounds 2 $m) &
                 (export CUDA_VISIBLE_DEVICES=1
                  run 300 python3 bench/bench_cameras.py --size 7b --rounds 2 $m) &
                 wait ;;
        round18) # a 2-GPU machine: Qwen towers encode the cameras' clips in one forward,
                 # against clip by clip in the same run; 8 cameras for an hour on the fused
                 # batched step (memory after every round)
                 m="--modes batched batched_encode_apart --cameras 1,8 --out $RES"
                 (export CUDA_VISIBLE_DEVICES=0
                  run 200 python3 -m pytest -q -rs -p no:cacheprovider test/test_batch_decode.py \
                      test/test_fast_vision.py -k cuda
                  run 150 python3 bench/bench_cameras.py --size qwen3-vl-2b --rounds 4 $m
                  run 200 python3 bench/bench_cameras.py --size qwen2.5-vl-3b --rounds 2 $m) &
                 (export CUDA_VISIBLE_DEVICES=1
                  run 150 python3 bench/bench_cameras.py --size 0.5b --rounds 8 --cameras 1,8 \
                      --modes batched batched_torch_step --out "$RES"
                  run 200 python3 bench/bench_cameras.py --size qwen3-vl-2b --rounds 112 \
                      --cameras 8 --modes batched --out "$RES"
                  run 200 python3 bench/bench_cameras.py --size 0.5b --rounds 112 --cameras 8 \
                      --modes batched --out "$RES") &
                 wait ;;
        closing4) # a 2-GPU machine, the closing commit of the batched fused step: every CUDA
                  # test; cameras 1, 2, 4, 8 with the fused batched step against the torch one
                  # (and Qwen's encodes together against one by one); one camera per clip again
                  b="batched batched_torch_step"
                  (export CUDA_VISIBLE_DEVICES=0
                   run 200 python3 -m pytest -q -rs -p no:cacheprovider test/test_fused_decode.py \
                       test/test_fast_decode.py test/test_batch_decode.py test/test_fast_vision.py \
                       test/test_quant.py test/test_backends.py \
                       -k "cuda or aside or patch or padded or fused or rope"
                   run 150 python3 bench/bench_cameras.py --size 0.5b --rounds 4 --cameras 1,2,4,8 \
                       --modes $b --out "$RES"
                   run 200 python3 bench/bench_cameras.py --size qwen3-vl-2b --rounds 4 \
                       --cameras 1,2,4,8 --modes $b batched_encode_apart --out "$RES") &
                  (export CUDA_VISIBLE_DEVICES=1
                   run 250 python3 bench/bench_cameras.py --size 7b --rounds 2 --cameras 1,2,4,8 \
                       --modes $b --out "$RES"
                   run 150 python3 bench/bench_cameras.py --size qwen2.5-vl-3b --rounds 2 \
                       --cameras 1,8 --modes $b batched_encode_apart --out "$RES"
                   run 90 python3 bench/bench_clip.py --size 0.5b --variants ours --states full \
                       --repeats 5 --warmup 2 --out "$RES"
                   run 90 python3 bench/bench_clip.py --size qwen3-vl-2b --variants ours \
                       --states full --side 480 --width 640 --repeats 3 --warmup 1 --out "$RES") &
                  wait ;;
        camprofile) # a 2-GPU machine: a round of 1 and 8 cameras split into its phases, and the
                    # CUDA kernels of one more round (device time against wall time)
                    cameras_two_gpus none --modes batched --cameras 1,8 --profile --out "$RES" ;;
        round19) # a 2-GPU machine: the batched products with num_stages among the tiles; the
                 # CUDA tests, then cameras 1 and 8 (fused batched step against the torch one)
                 cameras_two_gpus tests --modes batched batched_torch_step --cameras 1,8 \
                     --profile --out "$RES" ;;
        closing5) # a 2-GPU machine (fresh: Triton's cache cold), the batched tiles pruned to
                  # round19's winners: CUDA tests; 1 and 8 cameras, with the first round's time
                  cameras_two_gpus tests --modes batched --cameras 1,8 --out "$RES" ;;
        closing6) # one GPU: the decode steps' products through tiles.step_out: their CUDA
                  # tests; 1 and 8 cameras at 0.5B and Qwen3-VL-2B (against closing4/5)
                  p="--modes batched --cameras 1,8 --out $RES"
                  run 240 python3 -m pytest -q -rs -p no:cacheprovider test/test_fused_decode.py \
                      test/test_fast_decode.py test/test_batch_decode.py -k cuda
                  run 150 python3 bench/bench_cameras.py --size 0.5b --rounds 4 $p
                  run 150 python3 bench/bench_cameras.py --size qwen3-vl-2b --rounds 4 $p ;;
        closing7) # one GPU: backend.prepare (node configure) against the first clips building
                  # the decoders; each run with its own empty Triton cache, as a fresh machine
                  p="--modes batched --cameras 1,8 --rounds 2 --out $RES"
                  for size in 0.5b qwen3-vl-2b; do
                      TRITON_CACHE_DIR=/tmp/triton_plain_$size run 200 python3 \
                          bench/bench_cameras.py --size $size $p
                      TRITON_CACHE_DIR=/tmp/triton_prepared_$size run 200 python3 \
                          bench/bench_cameras.py --size $size --prepare $p
                  done ;;
        round20) # one GPU: LLaVA-OV's SigLIP tower with GELU in the fc1 product and cuDNN
                 # attention first, against the stock modules in the same run
                 v="--variants ours ours_stock_siglip --states full"
                 c="--modes batched --cameras 1,8 --out $RES"
                 run 150 python3 -m pytest -q -rs -p no:cacheprovider test/test_siglip.py \
                     test/test_backends.py -k "cuda or siglip"
                 run 120 python3 bench/bench_clip.py --size 0.5b $v --repeats 5 --warmup 2 \
                     --out "$RES"
                 run 150 python3 bench/bench_cameras.py --size 0.5b --rounds 4 $c
                 run 150 python3 bench/bench_clip.py --size 7b $v --repeats 3 --warmup 2 \
                     --out "$RES"
                 run 150 python3 bench/bench_cameras.py --size 7b --rounds 2 $c ;;
        closing3) # a 2-GPU machine, this session's closing commit: every CUDA test; per clip for
                  # the goal sizes with the decoder's build time (tile timing, cold Triton cache)
                  q="--states full --side 480 --width 640 --repeats 3 --warmup 1 --out $RES"
                  (export CUDA_VISIBLE_DEVICES=0
                   run 200 python3 -m pytest -q -rs -p no:cacheprovider test/test_fused_decode.py \
                       test/test_fast_decode.py test/test_batch_decode.py test/test_fast_vision.py \
                       test/test_quant.py test/test_backends.py \
                       -k "cuda or aside or patch or padded or fused or rope"
                   run 90 python3 bench/bench_clip.py --size 0.5b --variants ours --states full \
                       --repeats 5 --warmup 2 --out "$RES") &
                  (export CUDA_VISIBLE_DEVICES=1
                   run 90 python3 bench/bench_clip.py --size qwen3-vl-2b --variants ours $q
                   run 90 python3 bench/bench_clip.py --size qwen2.5-vl-3b --variants ours $q
                   run 100 python3 bench/bench_clip.py --size qwen2.5-vl-7b --variants ours $q
                   run 100 python3 bench/bench_clip.py --size 7b --variants ours --states full \
                       --repeats 3 --warmup 2 --out "$RES") &
                  wait ;;
        qwen25hour) # a 2-GPU machine: Qwen2.5-VL 3B / 7B for an hour on the fused step (memory flat?)
                    (export CUDA_VISIBLE_DEVICES=0
                     run 150 python3 bench/bench_stream.py --size qwen2.5-vl-3b --variant ours \
                         --hours 1 --out "$RES" --json "$OUT/json/stream_q25_3b.json") &
                    (export CUDA_VISIBLE_DEVICES=1
                     run 150 python3 bench/bench_stream.py --size qwen2.5-vl-7b --variant ours \
                         --hours 1 --out "$RES" --json "$OUT/json/stream_q25_7b.json") &
                    wait ;;
        camerahour) # a 2-GPU machine: 8 cameras (0.5B) and 4 (7B) captioned together for one
                    # hour each (112 clips a camera): GPU memory after every round
                    (export CUDA_VISIBLE_DEVICES=0
                     run 250 python3 bench/bench_cameras.py --size 0.5b --rounds 112 \
                         --cameras 8 --modes batched --out "$RES") &
                    (export CUDA_VISIBLE_DEVICES=1
                     run 300 python3 bench/bench_cameras.py --size 7b --rounds 112 \
                         --cameras 4 --modes batched --out "$RES") &
                    wait ;;
        busyask) for size in 0.5b 7b; do  # AskVideo while 4 cameras caption, against idle
                     run 420 python3 bench/bench_busy_ask.py --size "$size" --cameras 4 \
                         --out "$RES"
                 done ;;
        attn) clip 0.5b 5 --variants ours ours_cudnn full full_cudnn --states full
              clip 7b 3 --variants ours ours_cudnn full full_cudnn --states full ;;
        final) phase_check
               clip 0.5b 5 --variants ours stock full; clip 7b 3 --variants ours stock full
               run 300 python3 bench/bench_ask.py --size 0.5b --variants ours --out "$RES"
               run 300 python3 bench/bench_ask.py --size 7b --variants ours --repeats 3 \
                   --out "$RES"
               stream 0.5b ours --hours 1; stream 7b ours --hours 1 ;;
        ask) run 400 python3 bench/bench_ask.py --size 0.5b --out "$RES"
             run 500 python3 bench/bench_ask.py --size 7b --repeats 3 --out "$RES" ;;
        confirm) phase_check; clip 0.5b 5 --profile; clip 7b 3 --profile
                 run 400 python3 bench/bench_ask.py --size 0.5b --out "$RES"
                 run 500 python3 bench/bench_ask.py --size 7b --repeats 3 --out "$RES" ;;
        all) phase_check; clip 0.5b 5; clip 7b 3
             stream 0.5b ours --hours 1; stream 0.5b full --clips 24
             stream 7b ours --hours 1; stream 7b full --clips 20 ;;
        *) echo "unknown phase $phase" | tee -a "$LOG"; status=1 ;;
    esac
done
python3 bench/run_all.py --table "$RES" | tee -a "$LOG"
tar -czf "$OUT/bench_out.tar.gz" -C "$OUT" results.jsonl log.txt json \
    $(cd "$OUT" && ls -d synthetic_world world_a world_b probe 2>/dev/null)
exit $status
