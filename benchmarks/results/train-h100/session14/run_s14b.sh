#!/bin/bash
# session 14, call 2: gradient accumulation (4 micro-batches per optimizer step, both sides), with plain compile and
# with CUDA graphs (reduce-overhead, both sides)
export PYTHONUNBUFFERED=1
timeout 190 python3 benchmarks/train_throughput.py --models gpt2-medium --no-eager --accum 4 --name accum4-medium --out $OUT 2>&1 | grep "tok/s\|ERROR\|Error"
timeout 200 python3 benchmarks/train_throughput.py --models gpt2-medium --no-eager --accum 4 --compile-mode reduce-overhead --name accum4-graphs-medium --out $OUT 2>&1 | grep "tok/s\|ERROR\|Error"
timeout 190 python3 benchmarks/train_throughput.py --models gpt2-small --no-eager --accum 4 --compile-mode reduce-overhead --name accum4-graphs-small --out $OUT 2>&1 | grep "tok/s\|ERROR\|Error"
