#!/usr/bin/env bash
# Everything this project checks on a lent GPU, as one time-boxed run (the lease is short and
# CI never has a GPU). Run from the repository root on the GPU machine, with the DarkRoom dataset in
# data/darkroom-mixed (`t2mir collect --env t2mir/DarkRoom-v0 --quality mixed --budget paper
# --out data/darkroom-mixed`) and any missing Python packages importable:
#
#   OUT=results-dir DEADLINE_S=520 bash tests/gpu_lease.sh
#
# (DEVICE=cpu STEPS=20 runs the same sequence on a CPU, to try the script itself.)
#
# 1. GPU figures, each with its CPU baseline measured in the same process: cached one-step decoding
#    against the full forward for the shipped checkpoints (`t2mir bench-model`), and one training
#    step, dense against sparse expert dispatch (`t2mir bench-train`).
# 2. DarkRoom training at a GPU budget, in the background: VARIANTS (default "t2mir-ad ad": T2MIR-AD
#    and vanilla AD with both MoEs off; "t2mir-ad-e2" is T2MIR-AD with 2 task experts) x SEEDS
#    (default "0 1 2"), the CPU config's architecture with batch 32 and as many steps as fit before
#    the deadline (the same number for every run, from the single-step time above).
# 3. The CUDA-path tests (tests/model/test_cuda_path.py) while the runs train.
# 4. The runs' checkpoints and TensorBoard logs with every log of this script, packed into
#    $OUT/gpu-runs.tar.gz; $OUT then holds 8 files (the device tool returns at most 8).
set -uo pipefail
OUT=${OUT:?set OUT to a results folder}
DEADLINE_S=${DEADLINE_S:-520}
DEVICE=${DEVICE:-cuda}
SEEDS=${SEEDS:-0 1 2}
VARIANTS=${VARIANTS:-t2mir-ad ad}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
LOGS=$OUT/logs
mkdir -p "$LOGS"
began=$(date +%s)
t2mir() { python3 -m t2mir_model.cli "$@"; }
elapsed() { echo $(($(date +%s) - began)); }

{ nvidia-smi -L || echo "no nvidia-smi"; } | tee "$OUT/device.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/device.txt"

for name in darkroom-t2mir-ad darkroom-t2mir-dpt; do
    t2mir bench-model --checkpoint "checkpoints/$name" --device "$DEVICE" --batch 1 8 32 128 \
        --context-steps 300 --repeats 30 --json "$OUT/bench-model-$name-$DEVICE.json"
    t2mir bench-model --checkpoint "checkpoints/$name" --device cpu --batch 1 8 --context-steps 300 \
        --repeats 10 --json "$OUT/bench-model-$name-cpu.json"
done
for batch in 12 32; do
    t2mir bench-train --config darkroom-t2mir-ad-cpu device="$DEVICE" batch_size=$batch --steps 20 \
        --json "$OUT/bench-train-darkroom-b$batch-$DEVICE.json"
done

# Steps for the runs: all share the GPU, each slower than alone by half the number of runs
# (measured on the H200: six runs, 2.4-2.8x), and each step also draws its batch on the host
# (~12 ms at batch 32); round down to a multiple of 500.
n_runs=$(($(echo $SEEDS | wc -w) * $(echo $VARIANTS | wc -w)))
budget=$((DEADLINE_S - $(elapsed) - 30))
steps=$(python3 -c "
import json
ms = json.load(open('$OUT/bench-train-darkroom-b32-$DEVICE.json'))['dense_ms'] + 12
print(max(1000, min(12000, int($budget / (ms * 0.5e-3 * $n_runs)) // 500 * 500)))")
steps=${STEPS:-$steps}
echo "training budget ${budget}s -> ${steps} steps per run" | tee "$LOGS/runs.txt"
mkdir -p runs/gpu
pids=()
for seed in $SEEDS; do
    for variant in $VARIANTS; do
        case $variant in
            t2mir-ad) moe="" ;;
            t2mir-ad-e2) moe="task_experts=2 task_top_k=2" ;;
            ad) moe="token_moe=false task_moe=false" ;;
            *) echo "unknown variant $variant" >&2; exit 2 ;;
        esac
        run=runs/gpu/darkroom-$variant-s$seed
        t2mir train --config darkroom-t2mir-ad-cpu --no-progress --no-resume device="$DEVICE" \
            batch_size=32 steps="$steps" checkpoint_every=500 eval_every=0 final_eval=false \
            expert_dispatch=dense threads=1 seed=$seed $moe out=$run >"$LOGS/train-$variant-s$seed.log" 2>&1 &
        pids+=($!)
    done
done

python3 -m pytest tests/model/test_cuda_path.py -v -p no:cacheprovider 2>&1 | tee "$LOGS/pytest-cuda.log"

running() { for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
while [ "$(elapsed)" -lt "$DEADLINE_S" ] && running; do sleep 5; done
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && echo "killed $pid at the deadline" | tee -a "$LOGS/runs.txt"; done
wait
echo "finished after $(elapsed)s" | tee -a "$LOGS/runs.txt"
tar czf "$OUT/gpu-runs.tar.gz" --exclude='*.pt' runs/gpu -C "$OUT" logs
grep -h -E "passed|failed|error" "$LOGS/pytest-cuda.log" | tail -3
cat "$LOGS/runs.txt"
rm -r "$LOGS"
