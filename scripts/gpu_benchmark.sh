#!/usr/bin/env bash
# A time-boxed GPU benchmark and training run: everything this project checks on a GPU, finished
# before a deadline (CI never has a GPU). Run from the repository root on the GPU machine, with the
# DarkRoom dataset in data/darkroom-mixed (`t2mir collect --env t2mir/DarkRoom-v0 --quality mixed
# --budget paper --out data/darkroom-mixed`) and any missing Python packages importable:
#
#   OUT=results-dir DEADLINE_S=520 bash scripts/gpu_benchmark.sh
#
# (DEVICE=cpu STEPS=200 runs the same sequence on a CPU, to try the script itself.)
#
# 1. GPU figures, each with its CPU baseline measured in the same process: cached one-step decoding
#    against the full forward for the shipped checkpoints (`t2mir bench-model`), and one training
#    step, dense against sparse expert dispatch (`t2mir bench-train`).
# 2. DarkRoom training at a GPU budget, in the background: VARIANTS (default "t2mir-ad ad": T2MIR-AD
#    and vanilla AD with both MoEs off; "t2mir-ad-e2" is T2MIR-AD with 2 task experts) x SEEDS
#    (default "0 1 2"), the CPU config's architecture with batch 32 and as many steps as fit before
#    the deadline (the same number for every run, from the single-step time above).
# 3. With CHEETAH=1, Cheetah-Vel on the host's spare cores and then the GPU, in the background:
#    `t2mir collect --budget extended` (12 training tasks x 30k SAC steps, one niced worker per
#    task), then T2MIR-AD and vanilla AD (`cheetahvel-t2mir-ad-small`, seed 0) trained for as many
#    steps as fit before the deadline. The dataset travels back with the runs.
# 4. The CUDA-path tests (tests/model/test_cuda_path.py) while the runs train (CUDA_TESTS=0 skips).
# 5. The runs' checkpoints and TensorBoard logs with every log of this script, packed into
#    $OUT/gpu-runs.tar.gz (Cheetah-Vel's runs and dataset in gpu-cheetahvel.tar.gz); $OUT then holds
#    at most 8 files.
#
# BENCH=0 skips step 1 (then set STEPS: the runs' length comes from its training benchmark).
# CHEETAH_STEPS fixes the Cheetah-Vel runs' length (default: what fits before the deadline); DEVICE=cpu
# BENCH=0 STEPS=200 CHEETAH=1 CHEETAH_BUDGET=tiny CHEETAH_STEPS=200 tries the Cheetah-Vel part on a CPU.
set -uo pipefail
OUT=${OUT:?set OUT to a results folder}
DEADLINE_S=${DEADLINE_S:-520}
DEVICE=${DEVICE:-cuda}
SEEDS=${SEEDS:-0 1 2}
VARIANTS=${VARIANTS:-t2mir-ad ad}
BENCH=${BENCH:-1}
CHEETAH=${CHEETAH:-0}
CUDA_TESTS=${CUDA_TESTS:-1}
CHEETAH_BUDGET=${CHEETAH_BUDGET:-extended}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
LOGS=$OUT/logs
mkdir -p "$LOGS"
began=$(date +%s)
t2mir() { python3 -m t2mir_model.cli "$@"; }
elapsed() { echo $(($(date +%s) - began)); }

{ nvidia-smi -L || echo "no nvidia-smi"; } | tee "$LOGS/device.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$LOGS/device.txt"

# Steps that fit in the seconds left before the deadline for N runs sharing the device, from a
# training benchmark's JSON: all share the GPU, each slower than alone by half the number of runs
# (measured on the H200: six runs, 2.4-2.8x), and each step also draws its batch on the host
# (HOST_MS); rounded down to a multiple of 500.
fit_steps() { # bench_json n_runs host_ms
    local budget=$((DEADLINE_S - $(elapsed) - 30))
    python3 -c "
import json
ms = json.load(open('$1'))['dense_ms'] + $3
print(max(500, min(12000, int($budget / (ms * 0.5e-3 * max(2, $2))) // 500 * 500)))"
}

if [ "$BENCH" = 1 ]; then
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
fi

# DarkRoom runs: ~12 ms of host batch drawing per step at batch 32.
n_runs=$(($(echo $SEEDS | wc -w) * $(echo $VARIANTS | wc -w)))
steps=${STEPS:-$(fit_steps "$OUT/bench-train-darkroom-b32-$DEVICE.json" $n_runs 12)}
echo "DarkRoom: ${n_runs} runs of ${steps} steps from $(elapsed)s" | tee "$LOGS/runs.txt"
mkdir -p runs/gpu
# The training overrides of a variant name.
moe_overrides() {
    case $1 in
        t2mir-ad) echo "" ;;
        t2mir-ad-e2) echo "moe.task_experts=2 moe.task_top_k=2" ;;
        ad) echo "moe.token_moe=false moe.task_moe=false" ;;
        *) echo "unknown variant $1" >&2; return 2 ;;
    esac
}
for variant in $VARIANTS; do moe_overrides "$variant" >/dev/null || exit 2; done
pids=()
for seed in $SEEDS; do
    for variant in $VARIANTS; do
        moe=$(moe_overrides "$variant")
        run=runs/gpu/darkroom-$variant-s$seed
        t2mir train --config darkroom-t2mir-ad-cpu --no-progress --no-resume device="$DEVICE" \
            batch_size=32 steps="$steps" checkpoint_every=500 eval_every=0 final_eval=false \
            expert_dispatch=dense threads=1 seed=$seed $moe out=$run >"$LOGS/train-$variant-s$seed.log" 2>&1 &
        pids+=($!)
    done
done

# Cheetah-Vel: collection on the spare cores (niced below the GPU runs' host work), then both
# variants on the GPU.
cheetah() {
    nice -n 10 python3 -m t2mir_model.cli collect --env t2mir/CheetahVel-v0 --quality mixed \
        --budget "$CHEETAH_BUDGET" --snapshot-actions stochastic --out data/cheetah-vel-extended \
        --workers 12 --no-progress >"$LOGS/collect-cheetah.log" 2>&1 || return 1
    echo "Cheetah-Vel collected at $(elapsed)s" | tee -a "$LOGS/runs.txt"
    t2mir bench-train --config cheetahvel-t2mir-ad-small device="$DEVICE" --steps 10 \
        --json "$LOGS/bench-train-cheetahvel-$DEVICE.json" >"$LOGS/bench-cheetah.log" 2>&1 || return 1
    local cheetah_steps
    cheetah_steps=${CHEETAH_STEPS:-$(fit_steps "$LOGS/bench-train-cheetahvel-$DEVICE.json" 3 15)}
    echo "Cheetah-Vel: 2 runs of ${cheetah_steps} steps from $(elapsed)s" | tee -a "$LOGS/runs.txt"
    for variant in t2mir-ad ad; do
        moe=$(moe_overrides $variant)
        t2mir train --config cheetahvel-t2mir-ad-small --no-progress --no-resume device="$DEVICE" \
            steps="$cheetah_steps" final_eval=false expert_dispatch=dense seed=0 $moe \
            out=runs/gpu/cheetahvel-$variant-s0 >"$LOGS/train-cheetahvel-$variant-s0.log" 2>&1 &
    done
    wait
}
if [ "$CHEETAH" = 1 ]; then
    cheetah &
    pids+=($!)
fi

if [ "$CUDA_TESTS" = 1 ]; then
    python3 -m pytest tests/model/test_cuda_path.py -v -p no:cacheprovider 2>&1 | tee "$LOGS/pytest-cuda.log"
fi

# Stop a process and everything it started: the runs are subshells (the `t2mir` function, the
# Cheetah-Vel pipeline) whose python processes a plain kill would leave running.
stop_tree() {
    local children child
    children=$(pgrep -P "$1")
    kill "$1" 2>/dev/null || return 1
    for child in $children; do stop_tree "$child"; done
}
running() { for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
while [ "$(elapsed)" -lt "$DEADLINE_S" ] && running; do sleep 5; done
for pid in "${pids[@]}"; do
    stop_tree "$pid" && echo "killed $pid at the deadline" | tee -a "$LOGS/runs.txt"
done
wait
echo "finished after $(elapsed)s" | tee -a "$LOGS/runs.txt"
# A finished run travels as its final checkpoint, a stopped one as its last (each file back is at
# most 16 MiB): DarkRoom runs with the logs, Cheetah-Vel runs with their dataset.
for run in runs/gpu/*/; do [ -d "$run/final" ] && rm -rf "$run/last"; done
tar czf "$OUT/gpu-runs.tar.gz" --exclude='*.pt' $(ls -d runs/gpu/darkroom-* 2>/dev/null) -C "$OUT" logs
if [ "$CHEETAH" = 1 ]; then
    tar czf "$OUT/gpu-cheetahvel.tar.gz" --exclude='*.pt' $(ls -d runs/gpu/cheetahvel-* data/cheetah-vel-extended 2>/dev/null)
fi
[ "$CUDA_TESTS" = 1 ] && grep -h -E "passed|failed|error" "$LOGS/pytest-cuda.log" | tail -3
cat "$LOGS/runs.txt"
rm -r "$LOGS"
