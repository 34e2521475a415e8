#!/bin/bash
# session 14, call 4: the 400-step gpt2-small run of call 1 again with CUDA graphs (`--set cuda_graphs=true`)
export PYTHONUNBUFFERED=1
timeout 150 python3 -m training.pretrain --shards runs/sweep-tokens --output /tmp/pt --preset gpt2-small --steps 400 \
  --set batch_size=16 --set context_length=1024 --set compile=true --set cuda_graphs=true --set warmup_steps=40 --set max_lr=6e-4 \
  --set min_lr=6e-5 --set eval_every=50 2>&1 | grep -v "Warning\|warn" | tail -4
cp /tmp/pt/metrics.jsonl $OUT/pretrain-bf16-weights-graphs.jsonl
