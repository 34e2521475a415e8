#!/bin/bash
# session 14, call 3: gpt2-medium at batch 32 (both sides); `sift pretrain --set cuda_graphs=true` with 2 micro-batches
# a step against the same run without (losses must agree); profile of the default gpt2-medium step (bf16 weights)
export PYTHONUNBUFFERED=1
timeout 200 python3 benchmarks/train_throughput.py --models gpt2-medium --no-eager --batch 32 --name b32-medium --out $OUT 2>&1 | grep "tok/s\|ERROR\|Error"
for g in false true; do
  timeout 100 python3 -m training.pretrain --shards runs/sweep-tokens --output /tmp/pt-$g --preset gpt2-small --steps 60 \
    --set batch_size=8 --set grad_accum=2 --set context_length=1024 --set compile=true --set cuda_graphs=$g --set warmup_steps=10 \
    --set max_lr=6e-4 --set min_lr=6e-5 --set eval_every=30 2>&1 | grep -v "Warning\|warn" | grep -i "error\|val_loss\|Traceback" | tail -3
  cp /tmp/pt-$g/metrics.jsonl $OUT/pretrain-graphs-$g.jsonl
done
timeout 100 python3 benchmarks/train_throughput.py --profile --models gpt2-medium --out $OUT 2>&1 | tail -19
