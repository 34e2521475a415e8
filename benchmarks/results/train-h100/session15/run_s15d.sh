#!/bin/bash
# session 15, call 5 (4 x H100): call 4 again with the bf16 weight copies that `sift pretrain` keeps (call 4's
# ddp_scaling.py did not attach them: it ran autocast's per-step weight casts)
export PYTHONUNBUFFERED=1
GPUS="1 4" MODELS=gpt2-medium MODES=ddp,zero1 STEPS=10 TIMEOUT=270 TAG=-bf16w OUT=$OUT bash benchmarks/gpu_scaling.sh weak 2>&1 | grep -v '^{' | tail -8
