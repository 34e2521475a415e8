#!/bin/bash
# session 15, call 4 (4 x H100): weak scaling of gpt2-medium at 1 and 4 GPUs with today's defaults (bf16 weight
# copies kept by AdamW, fused head + loss), bucketed DDP and ZeRO-1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader | head -1
GPUS="1 4" MODELS=gpt2-medium MODES=ddp,zero1 STEPS=10 TIMEOUT=270 OUT=$OUT bash benchmarks/gpu_scaling.sh weak 2>&1 | grep -v '^{' | tail -8
