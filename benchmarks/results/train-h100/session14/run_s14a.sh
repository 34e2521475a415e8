#!/bin/bash
# session 14, call 1: bf16 weight copies kept by the optimizer (model/precision.py): GPU tests; A/B against autocast's
# per-step casts for both models (with the reference); 400-step gpt2-small loss check with the copies (the default)
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 -m pytest -q tests/model/test_precision.py tests/training/test_optim.py -p no:cacheprovider 2>&1 | tail -4 | tee $OUT/tests.txt
timeout 230 python3 benchmarks/train_throughput.py --models gpt2-medium --no-eager \
  --variants "bf16w:,castw:bf16_weights=false" --name lp-ab-medium --out $OUT 2>&1 | grep -v "Warning\|warn"
timeout 200 python3 benchmarks/train_throughput.py --models gpt2-small --no-eager \
  --variants "bf16w:,castw:bf16_weights=false" --name lp-ab-small --out $OUT 2>&1 | grep -v "Warning\|warn"
timeout 110 python3 -m training.pretrain --shards runs/sweep-tokens --output /tmp/pt --preset gpt2-small --steps 400 \
  --set batch_size=16 --set context_length=1024 --set compile=true --set warmup_steps=40 --set max_lr=6e-4 \
  --set min_lr=6e-5 --set eval_every=50 2>&1 | grep -v "Warning\|warn" | tail -4
cp /tmp/pt/metrics.jsonl $OUT/pretrain-bf16-weights.jsonl
