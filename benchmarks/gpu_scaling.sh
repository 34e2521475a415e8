#!/usr/bin/env bash
# The multi-GPU measurements of issues 7, 8 and 12, as run on the lent GPU node (results under $OUT):
#   bash benchmarks/gpu_scaling.sh weak     # DDP / ZeRO-1 weak scaling at 1, 2, 4, ... GPUs (torchrun, no Ray)
#   bash benchmarks/gpu_scaling.sh sweep    # the IsoFLOP sweep, one Ray task per GPU; then Ray Train DDP on every GPU
#   SWEEP_GPUS=1 RAY_TRAIN=0 bash benchmarks/gpu_scaling.sh sweep   # the same sweep on GPU 0 only (the baseline)
# COMPILE_MODE=blocks|model (default model, pretraining's default); MODELS, MODES, STEPS, TIMEOUT, BUCKET_MB, TAG (result
# file suffix), DDP_ARGS (more ddp_scaling.py flags, e.g. --no-bf16-weights) and GPUS (the GPU counts, default 1 2 4 ... up to all) as below.
# Needs Ray for `sweep` (on the bare GPU image: carry .device from ../shared/tools/device-wheels.sh and set PYTHONPATH
# as it prints) and runs/sweep-tokens (benchmarks/shared_corpus.py --all-text, see its docstring).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-scaling}
mkdir -p "$OUT"
NGPU=$(python3 -c "import torch; print(torch.cuda.device_count())")
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpus.csv" 2>/dev/null || true
nvidia-smi topo -m > "$OUT/topology.txt" 2>/dev/null || true
case "${1:-weak}" in
  weak)
    for n in ${GPUS:-$(n=1; while [ "$n" -le "$NGPU" ]; do echo $n; n=$((n * 2)); done)}; do
      echo "== $n GPU(s)"
      t0=$(date +%s)
      timeout "${TIMEOUT:-300}" torchrun --standalone --nproc-per-node "$n" benchmarks/ddp_scaling.py --compile \
        --compile-mode "${COMPILE_MODE:-model}" --models "${MODELS:-gpt2-small,gpt2-medium}" --steps "${STEPS:-10}" \
        --modes "${MODES:-ddp,zero1}" --bucket-mb "${BUCKET_MB:-25}" --tag="${TAG:-}" ${DDP_ARGS:-} --out "$OUT/ddp" 2>&1 | grep -v "^W\|Warning" | tail -8
      echo "   $n GPU(s): $(( $(date +%s) - t0 )) s wall"
    done
    python3 benchmarks/ddp_scaling.py --summarize "$OUT/ddp" | tee "$OUT/ddp_scaling.txt"
    ;;
  sweep)
    G=${SWEEP_GPUS:-$NGPU}
    if [ "$G" -lt "$NGPU" ]; then export CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((G - 1))); fi
    S="$OUT/sweep-gpu$G"
    start=$(date +%s)
    python3 -m training.sweep --config configs/sweep-gpu.yaml --set "output=$S" 2>&1 | grep -v "WARNING\|INFO\|Warning\|warn" | tail -30
    echo "sweep wall: $(( $(date +%s) - start )) s on $G GPU(s)" | tee -a "$OUT/sweep-wall.txt"
    mkdir -p "$S-metrics"   # per-run loss curves, flat (checkpoints stay behind)
    for d in "$S"/runs/*/; do cp "$d/metrics.jsonl" "$S-metrics/$(basename "$d").jsonl"; done
    rm -rf "$S/runs"
    [ "${RAY_TRAIN:-1}" = 1 ] || exit 0
    start=$(date +%s)
    rm -rf runs/pretrain-ray
    python3 -m training.pretrain --shards runs/sweep-tokens --output runs/pretrain-ray --preset gpt2-small \
      --steps "${PRETRAIN_STEPS:-60}" --num-workers "$G" --use-gpu --set batch_size=16 --set context_length=1024 \
      --set compile=true --set eval_every=30 --set checkpoint_every=60 --set warmup_steps=10 --set max_lr=6e-4 \
      --set min_lr=6e-5 2>&1 | grep -v "WARNING\|INFO" | tail -15
    echo "ray train wall: $(( $(date +%s) - start )) s on $G GPU(s)" | tee -a "$OUT/sweep-wall.txt"
    cp runs/pretrain-ray/metrics.jsonl runs/pretrain-ray/config.json "$OUT/" 2>/dev/null
    ;;
esac
