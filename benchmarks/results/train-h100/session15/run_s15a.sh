#!/bin/bash
# session 15, call 1 (2 x H100): weak scaling at 1 and 2 GPUs with today's defaults (bf16 weight copies, fused head),
# bucketed DDP, both models; then `sift pretrain` under torchrun on 2 GPUs with and without CUDA graphs (gpt2-small,
# micro-batch 8 x 2 accumulated): tokens/s, and the two runs' losses must agree
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
GPUS="1 2" MODES=ddp STEPS=10 TIMEOUT=200 OUT=$OUT bash benchmarks/gpu_scaling.sh weak 2>&1 | tail -12
for g in false true; do
  timeout 110 torchrun --standalone --nproc-per-node 2 -m training.pretrain --shards runs/sweep-tokens --output /tmp/pt2-$g \
    --preset gpt2-small --steps 60 --set batch_size=8 --set grad_accum=2 --set context_length=1024 --set compile=true \
    --set cuda_graphs=$g --set warmup_steps=10 --set max_lr=6e-4 --set min_lr=6e-5 --set eval_every=30 2>&1 \
    | grep -v "Warning\|warn\|^W" | grep -i "error\|val_loss\|Traceback\|tokens" | tail -4
  cp /tmp/pt2-$g/metrics.jsonl $OUT/pretrain-2gpu-graphs-$g.jsonl
done
