#!/usr/bin/env bash
# The multi-GPU measurements of issues 7, 8 and 12, as run on the lent GPU node (results under $OUT):
#   bash benchmarks/gpu_scaling.sh weak     # DDP / ZeRO-1 weak scaling at 1, 2, 4, ... GPUs (torchrun, no Ray)
#   bash benchmarks/gpu_scaling.sh sweep    # the IsoFLOP sweep, one Ray task per GPU; then Ray Train DDP on every GPU
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
    n=1
    while [ "$n" -le "$NGPU" ]; do
      echo "== $n GPU(s)"
      timeout 300 torchrun --standalone --nproc-per-node "$n" benchmarks/ddp_scaling.py --compile \
        --models "${MODELS:-gpt2-small,gpt2-medium}" --steps "${STEPS:-10}" --out "$OUT/ddp" 2>&1 | grep -v "^W\|Warning" | tail -8
      n=$((n * 2))
    done
    python3 benchmarks/ddp_scaling.py --summarize "$OUT/ddp" | tee "$OUT/ddp_scaling.txt"
    ;;
  sweep)
    start=$(date +%s)
    python3 -m training.sweep --config configs/sweep-gpu.yaml --set "output=$OUT/sweep-gpu" 2>&1 | grep -v "WARNING\|INFO\|Warning\|warn" | tail -30
    echo "sweep wall: $(( $(date +%s) - start )) s on $NGPU GPU(s)" | tee "$OUT/sweep-wall.txt"
    mkdir -p "$OUT/sweep-metrics"   # per-run loss curves, flat (checkpoints stay behind)
    for d in "$OUT"/sweep-gpu/runs/*/; do cp "$d/metrics.jsonl" "$OUT/sweep-metrics/$(basename "$d").jsonl"; done
    rm -rf "$OUT/sweep-gpu/runs"
    start=$(date +%s)
    rm -rf runs/pretrain-ray
    python3 -m training.pretrain --shards runs/sweep-tokens --output runs/pretrain-ray --preset gpt2-small \
      --steps "${PRETRAIN_STEPS:-60}" --num-workers "$NGPU" --use-gpu --set batch_size=16 --set context_length=1024 \
      --set compile=true --set eval_every=30 --set checkpoint_every=60 --set warmup_steps=10 --set max_lr=6e-4 \
      --set min_lr=6e-5 2>&1 | grep -v "WARNING\|INFO" | tail -15
    echo "ray train wall: $(( $(date +%s) - start )) s on $NGPU GPU(s)" | tee -a "$OUT/sweep-wall.txt"
    cp runs/pretrain-ray/metrics.jsonl runs/pretrain-ray/config.json "$OUT/" 2>/dev/null
    ;;
esac
