#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md: tritium and the transformers baseline on the Llama-3.1-8B shape
# with random bf16 weights, same requests, same flags, in the same device session. One stage per
# device call (each under 10 minutes), after the environment is set up (PYTHONPATH, wheels):
#
#   bash scripts/bench_gpu.sh latency            # batch 1, 128 in / 128 out, both backends
#   bash scripts/bench_gpu.sh 128                # offline 128/128, 512 requests, both backends
#   bash scripts/bench_gpu.sh 1000 tritium       # offline 1000/1000, 128 requests (one backend a call)
#   bash scripts/bench_gpu.sh 1000 transformers
#
# Tables go to stdout, JSON reports to $OUT (default ./bench-out).
set -euo pipefail
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
stage=${1:?usage: bench_gpu.sh latency|128|1000 [tritium|transformers]}
backends=${2:-tritium transformers}
MODEL=(--model llama-3.1-8b --load-format dummy --dtype bfloat16)
bench() { python3 -m tritium.entrypoints.cli bench "$@"; }

case "$stage" in
  latency)
    for b in $backends; do
      bench latency "${MODEL[@]}" --backend "$b" --batch-size 1 --input-len 128 --output-len 128 \
        --iterations 5 --warmup 1 --report-json "$OUT/latency-b1-128-128-$b.json"
    done ;;
  128|1000)
    requests=$([ "$stage" = 128 ] && echo 512 || echo 128)
    data="$OUT/dataset-$stage.jsonl"
    bench prepare-dataset token-norm-dist --num-requests "$requests" --input-mean "$stage" --output-mean "$stage" \
      --vocab-size 128256 --seed 0 --output "$data"
    for b in $backends; do
      bench throughput "${MODEL[@]}" --backend "$b" --dataset "$data" --max-batch-size 128 \
        --report-json "$OUT/throughput-$stage-$b.json"
    done ;;
  *) echo "unknown stage $stage: latency, 128 or 1000" >&2; exit 2 ;;
esac
