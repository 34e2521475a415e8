#!/bin/bash
# session 14, call 5: the LM head's bf16 copy read by the fused head + loss op: GPU tests; A/B for both models
export PYTHONUNBUFFERED=1
timeout 80 python3 -m pytest -q tests/model/test_precision.py tests/model/test_cross_entropy_kernel.py -p no:cacheprovider 2>&1 | tail -3 | tee $OUT/tests-head.txt
timeout 120 python3 benchmarks/train_throughput.py --models gpt2-small --no-eager --no-reference \
  --variants "bf16w:,castw:bf16_weights=false" --name lp-head-ab-small --out $OUT 2>&1 | grep "tok/s\|ERROR\|Error"
timeout 120 python3 benchmarks/train_throughput.py --models gpt2-medium --no-eager --no-reference \
  --variants "bf16w:,castw:bf16_weights=false" --name lp-head-ab-medium --out $OUT 2>&1 | grep "tok/s\|ERROR\|Error"
