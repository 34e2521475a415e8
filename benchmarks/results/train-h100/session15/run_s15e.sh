#!/bin/bash
# session 15, call 6 (4 x H100): ZeRO-1 owners broadcast the bf16 copies of copy-only weights instead of their fp32
# values (ShardedOptimizer(copy_only=...)); gpt2-medium at 1 and 4 GPUs, against call 5's ZeRO-1 rows
export PYTHONUNBUFFERED=1
GPUS="1 4" MODELS=gpt2-medium MODES=zero1 STEPS=10 TIMEOUT=150 TAG=-copybcast OUT=$OUT bash benchmarks/gpu_scaling.sh weak 2>&1 | grep -v '^{' | tail -6
