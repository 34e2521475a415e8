#!/bin/bash
# session 15, call 2: gpt2-medium with Inductor max-autotune (Triton GEMM templates against cuBLAS, epilogue fusion)
# on GPU 1, while GPU 0 times the gpt2-medium A/B of the LM head reading its bf16 copy (bf16w) against casting (castw)
export PYTHONUNBUFFERED=1
(CUDA_VISIBLE_DEVICES=1 TORCHINDUCTOR_COMPILE_THREADS=20 timeout 570 python3 benchmarks/train_throughput.py \
  --models gpt2-medium --no-eager --no-reference --compile-mode max-autotune-no-cudagraphs --name autotune-medium \
  --out $OUT > $OUT/autotune.log 2>&1; echo "autotune rc $?" >> $OUT/autotune.log) &
CUDA_VISIBLE_DEVICES=0 timeout 260 python3 benchmarks/train_throughput.py --models gpt2-medium --no-eager \
  --variants "bf16w:,castw:bf16_weights=false" --name lp-head-ab-medium --out $OUT 2>&1 | grep "tok/s\|ERROR\|Error"
wait
grep "tok/s\|ERROR\|Error\|rc " $OUT/autotune.log
