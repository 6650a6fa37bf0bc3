#!/usr/bin/env bash
# One device call on an H200: install the carried wheels (.whl: the server's dependencies, gguf),
# then run the named stages in order. Logs and JSON reports go to $LOGS, packed at the end into
# $OUT/gpu-logs.tgz (the device tool brings back at most 8 files).
#
#   bash scripts/gpu_session.sh tests quant-latency serve
#
# The wheels (what the H200 image lacks, at the versions installed here; 2026-12-01): gguf, llguidance,
# fastapi, starlette, uvicorn, pydantic, pydantic_core, annotated-types, typing-inspection and
# opentelemetry-api (fastapi >= 0.16x imports it). For each NAME==VERSION, from the repository root:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_31_x86_64 -d .whl NAME==VERSION
#
# Each engine run is under RUN_TIMEOUT seconds (default 150) so one stuck run cannot eat a call;
# keep a whole call under the device tool's 10 minutes (`timeout 580 bash scripts/gpu_session.sh ...`).
# CPU smoke run of the script itself (small shape, few prompts, installed packages):
#   SKIP_WHEELS=1 SHAPE=smollm2-135m SAT_PROMPTS=6 RATE_PROMPTS=4 OUT=/tmp/gs bash scripts/gpu_session.sh serve engine-load
#
# Stages:
#   tests          tests/gpu and tests/kernels compiled on the GPU (real sizes; ran past 580 s in one
#                  call on 2026-11-30: prefer gpu-tests and stream-test)
#   gemv           decode-sized linears: bf16 cuBLAS vs the quantized weight-streaming kernels
#   quant-latency  batch-1 decode 128/128 (bench latency), bf16 and each quantization, same run
#   quant-offline  offline 128/128 x4096 and 1000/1000 x1024, bf16 and FP8 (+FP8 KV cache)
#   pdl-ab         GPU tests under TRITIUM_PDL=1, then batch-1 decode bf16 / FP8 / W4A16 with it off and on
#   mixed-split-ab FP8 offline 128/128, TRITIUM_MIXED_DECODE_SPLIT off and on; then 1000/1000
#   fp8-batch      FP8 offline 128/128 at max batch $FP8_BATCHES (1024 2048 4096), 1000/1000 at 768
#   serve          offline 467/256 at concurrency 512, then tritium serve (dummy 8B) under bench serve:
#                  saturation (512 concurrent), then 2 requests/s
#   policy         offline 1000/1000 x1024 with each capacity scheduler policy
#   serve-sat      the server's saturation run only, started with $SERVE_FLAGS (--no-engine-process: A/B)
#   serve-profile  tritium serve at saturation under py-spy (front, engine process, client) and top
#   engine-load    tritium build of a FP8 8B engine, then load to first token (phase log): warm Triton cache,
#                  TRITIUM_GRAPH_WARMUP=all, warm again, empty Triton cache
#   profile        torch profiler tables: batch-1 FP8 / W4A16 decode, a 467-token prefill step
#   profile-fp8-offline  torch profiler over an FP8 + FP8 KV cache 1000/1000 run: kernel families, top kernels
#   prefill-spy    467-token prefills one at a time under py-spy (carry .tools): the prefill step's host time
#   prefill-ab     467-token prefills one at a time, prefill CUDA graphs on and off (same process)
#   prefill-timeline  a lone 467-token prompt's way to its first token, stamped (0 and 2 requests decoding
#                  meanwhile)
#   fp8-pairs-ab   TRITIUM_FP8_KV_PAIRS=1 (the FP8 cache read in 16-bit pairs): its GPU tests, decode attention
#                  microbenchmark off / on, batch-1 decode at 8000 tokens bf16 / FP8 KV off / on
#   fp8-pairs-offline  FP8 1000/1000 with the FP8 cache read as bytes, then as pairs
#   fp8-pairs-auto the default pair policy: batch 1 at 8,000 tokens (bf16, FP8 KV), FP8 + FP8 KV 1000/1000
#   kv128          batch-1 decode 128/128 with a bf16 and an FP8 KV cache
#   int4-asm       int4 tensor-core tiles converting nibbles in PTX: GPU tests, GEMV microbenchmark, W4A16 batch 1
#   diag-fp8       why a tiny FP8 engine's GPU logits differ from the CPU path's (parts swapped)
#   prefill-graph-tests  the prefill graphs vs Hugging Face and the eager step, activation quantization,
#                  the saved memory profile, the fused split-K sum, exponent-trick int4 tiles
#   dequant-tests  one-pass int4 / int8 weight dequantization (weight-only prefill), small and real sizes
#   serve-rate2    tritium serve at 2 requests/s only (TTFT / ITL)
#   late-schedule-ab  the same without and with late scheduling (TRITIUM_LATE_SCHEDULE=0 / 1)
#   fused-sum-ab   batch-1 FP8 / W4A16 decode, TRITIUM_FUSED_SPLIT_SUM off and on
#   stream-test    tests/gpu/test_weight_streaming_gpu.py
#   attn-tests     the attention kernels on the GPU (small cases, mixed steps, quantized KV at real sizes)
#   attn-bench     decode attention tile variants at 8B sizes (ATTN_BASELINE=<module file>: an earlier copy too)
#   gpu-tests      each tests/gpu module under its own time limit
#   latency-short  batch-1 decode: bf16, FP8, W4A16, W8A16
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu-out}
LOGS=/tmp/gpu-logs
mkdir -p "$OUT" "$LOGS"
trap 'tar czf "$OUT/gpu-logs.tgz" -C "$LOGS" .' EXIT
if [ -d .whl ] && [ -z "${SKIP_WHEELS:-}" ]; then  # SKIP_WHEELS=1: a CPU smoke run uses what is installed
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
RUN_TIMEOUT=${RUN_TIMEOUT:-150}  # seconds for one engine run: a stuck run must not eat the call
# SIGABRT at the time limit: Python's faulthandler prints every thread's stack (where a run hung)
export PYTHONFAULTHANDLER=1
tritium() { timeout -s ABRT "$RUN_TIMEOUT" python3 -m tritium.entrypoints.cli "$@"; }
SHAPE=${SHAPE:-llama-3.1-8b}  # a packaged model shape (tritium/bench/model_shapes); another for a CPU smoke run
VOCAB=$(python3 -c "import json; print(json.load(open('tritium/bench/model_shapes/$SHAPE/config.json'))['vocab_size'])")
MODEL=(--model "$SHAPE" --load-format dummy --dtype bfloat16)
nvidia-smi -L
git log --oneline -1 2>/dev/null || true

dataset() {  # dataset <file> <requests> <in> <out>
  [ -e "$1" ] || tritium bench prepare-dataset token-norm-dist --num-requests "$2" --input-mean "$3" \
    --output-mean "$4" --vocab-size "$VOCAB" --seed 0 --output "$1"
}

latency() {  # latency <tag> [flags...]
  local tag=$1; shift
  tritium bench latency "${MODEL[@]}" --batch-size 1 --input-len 128 --output-len 128 --iterations 5 --warmup 1 \
    --report-json "$LOGS/lat-$tag.json" "$@" 2>&1 | tee "$LOGS/lat-$tag.log" \
    | grep -iE "^(TTFT|TPOT|decode tok|output tok/s|KV cache cap|startup: engine|peak memory|step time)|error|Traceback" | head -20
}

offline() {  # offline <tag> <dataset> [flags...]
  local tag=$1 data=$2; shift 2
  rm -f "$LOGS/off-$tag.json"
  tritium bench throughput "${MODEL[@]}" --dataset "$data" --max-batch-size 512 --max-num-tokens 8192 \
    --report-json "$LOGS/off-$tag.json" "$@" > "$LOGS/off-$tag.log" 2>&1 &
  local run=$!
  # once the report is written, the run has 20 s to shut down; then SIGABRT (faulthandler: stacks)
  while kill -0 $run 2>/dev/null; do
    if [ -e "$LOGS/off-$tag.json" ]; then
      sleep 20
      kill -0 $run 2>/dev/null && { echo "still running 20 s after its report: SIGABRT"; pkill -ABRT -f "bench throughput"; }
      break
    fi
    sleep 1
  done
  wait $run
  tr '\r' '\n' < "$LOGS/off-$tag.log" \
    | grep -iE "^(output token|total token|request) throughput|^(TTFT|TPOT)|KV cache cap|startup: engine|preemptions|Triton compiled|error|Traceback|^Thread|^  File" \
    | head -40
}

load_engine() {  # load_engine <tag>: a fresh process loads /tmp/eng-fp8 to its first token (phase log)
  timeout 150 python3 - "$1" <<'PY' 2>&1 | tee "$LOGS/engine-load-$1.log" | grep -v Loading | tail -8
import logging, sys, time
t0 = time.perf_counter()
from tritium import LLM, SamplingParams
logging.basicConfig(level=logging.WARNING, format="[tritium %(relativeCreated)6.0f ms] %(levelname)s %(message)s")
logging.getLogger("tritium").setLevel(logging.INFO)  # the start-up phase log
llm = LLM(model="/tmp/eng-fp8")
t1 = time.perf_counter()
llm.generate([[1, 2, 3, 4]], SamplingParams(max_tokens=1, ignore_eos=True), use_tqdm=False)
t2 = time.perf_counter()
print(f"saved FP8 8B engine ({sys.argv[1]}): import+load {t1 - t0:.1f} s, to first token {t2 - t0:.1f} s "
      "(interpreter start excluded)")
PY
}

start_server() {  # start_server <log name> <seconds> [flags]: tritium serve of $SHAPE (dummy bf16) on :8000
  local log=$1 limit=$2; shift 2
  mkdir -p /tmp/l8b && cp tritium/bench/model_shapes/$SHAPE/config.json /tmp/l8b/config.json
  # started directly (not through the tritium function) so that $server is `timeout`, which passes
  # stop_server's SIGTERM on to the server
  timeout "$limit" python3 -m tritium.entrypoints.cli serve /tmp/l8b --load-format dummy --dtype bfloat16 \
    --max-batch-size 512 --max-num-tokens 8192 --max-seq-len 4096 --port 8000 "$@" > "$LOGS/$log" 2>&1 &
  server=$!
}

stop_server() {
  kill "$server"; wait "$server"
  pkill -f "tritium.entrypoints.cli serve" || true  # never leave a server holding the GPU
}

saturation() {  # saturation <tag> [bench serve flags]: 467 in / 256 out at 512 concurrent streams
  local tag=$1; shift
  tritium bench serve --ready-timeout 120 --input-mean 467 --output-mean 256 --vocab-size "$VOCAB" \
    --max-concurrency 512 --result-json "$LOGS/serve-$tag.json" "$@"
}

for stage in "$@"; do
  echo "=== stage $stage ($(date +%T))"
  case "$stage" in
    gpu-tests)  # the tests/gpu modules only, each under its own time limit
      for t in tests/gpu/test_*.py; do
        timeout 420 python3 -m pytest -q -p no:cacheprovider --maxfail=3 --durations=5 "$t" 2>&1 \
          | tee "$LOGS/pytest-$(basename "$t" .py).log" | tail -12
      done ;;
    tests)
      python3 -m pytest -q -p no:cacheprovider --maxfail=4 tests/gpu tests/kernels 2>&1 | tee "$LOGS/pytest-gpu.log" | tail -25 ;;
    profile)  # torch profiler: batch-1 decode steps of FP8 and W4A16, one 467-token prefill step
      timeout "${PROFILE_TIMEOUT:-240}" python3 scripts/gpu_speed_check.py --sections profile-quant,profile-prefill 2>&1 \
        | tee "$LOGS/profile.log" | grep -E "^\[profile" ;;
    profile-fp8-offline)  # torch profiler over an FP8 + FP8 KV 1000/1000 run (512 requests at batch 512)
      timeout "${PROFILE_TIMEOUT:-300}" python3 scripts/gpu_speed_check.py --sections profile-offline-fp8 2>&1 \
        | tee "$LOGS/profile-fp8-offline.log" | grep -E "^\[profile" ;;
    stream-test)
      timeout 150 python3 -m pytest -q -p no:cacheprovider --durations=5 tests/gpu/test_weight_streaming_gpu.py 2>&1 \
        | tee "$LOGS/pytest-streaming.log" | tail -8 ;;
    attn-tests)  # the attention kernels compiled on the GPU: small cases, mixed steps, quantized KV at real sizes
      timeout 240 python3 -m pytest -q -p no:cacheprovider --maxfail=3 tests/kernels/test_attention_kernels.py \
        tests/kernels/test_kv_quant_kernels.py tests/kernels/test_mixed_step_attention.py \
        tests/gpu/test_quantization_gpu.py -k "attention or kv or mixed" 2>&1 | tee "$LOGS/pytest-attn.log" | tail -6
      timeout 420 python3 -m pytest -q -p no:cacheprovider --maxfail=3 tests/gpu/test_gpu_engine.py 2>&1 \
        | tee "$LOGS/pytest-gpu-engine.log" | tail -6 ;;
    attn-bench)  # decode attention variants (and $ATTN_BASELINE, an earlier copy) at 8B sizes; mixed steps
      timeout 300 python3 scripts/bench_decode_attention.py ${ATTN_BASELINE:+--baseline "$ATTN_BASELINE"} \
        --json "$LOGS/attn-bench.json" 2>&1 | tee "$LOGS/attn-bench.log" | grep -vE "^\s*$" | tail -80 ;;
    gemv)
      timeout ${GEMV_TIMEOUT:-200} python3 scripts/bench_quant_gemv.py --rows 1 16 --candidates 2>&1 | tee "$LOGS/gemv.log" ;;
    kv128)  # batch 1 at 128 tokens, bf16 cache and FP8 cache
      latency bf16-128
      latency kvfp8-128 --kv-cache-dtype fp8 ;;
    latency-short)  # bf16 baseline, FP8, W4A16
      latency bf16
      for q in FP8 W4A16 W8A16; do latency "$q" --quantization "$q"; done ;;
    fused-sum-ab)  # batch-1 decode with the split-K partials summed in the GEMM kernel vs a second kernel
      for q in FP8 W4A16; do
        TRITIUM_FUSED_SPLIT_SUM=0 latency "$q-split-kernel" --quantization "$q"
        TRITIUM_FUSED_SPLIT_SUM=1 latency "$q-fused-sum" --quantization "$q"
      done ;;
    quant-latency)
      TRITIUM_STREAMING_GEMM=0 latency bf16-cublas
      latency bf16
      for q in FP8 W4A16 FP8_PER_CHANNEL_PER_TOKEN W8A16; do latency "$q" --quantization "$q"; done
      latency kvfp8 --kv-cache-dtype fp8 ;;
    quant-offline)
      dataset /tmp/d128.jsonl 4096 128 128
      dataset /tmp/d1000.jsonl 1024 1000 1000
      offline 128-bf16 /tmp/d128.jsonl
      offline 128-fp8 /tmp/d128.jsonl --quantization FP8 --kv-cache-dtype fp8
      offline 1000-fp8 /tmp/d1000.jsonl --quantization FP8 --kv-cache-dtype fp8 ;;
    fp8-batch)  # FP8 offline with more requests a step than 512 (the FP8 KV cache holds ~1M tokens)
      dataset /tmp/d128.jsonl 4096 128 128
      dataset /tmp/d1000.jsonl 1024 1000 1000
      for mb in ${FP8_BATCHES:-1024 2048 4096}; do offline "128-fp8-mb$mb-$SECONDS" /tmp/d128.jsonl --quantization FP8 --kv-cache-dtype fp8 \
        --max-batch-size $mb; done
      # 768 x 2000 tokens fit the ~1.9M-token FP8 cache (1024 preempted: 51 times on 2026-11-30)
      [ -n "${FP8_SKIP_1000:-}" ] || offline 1000-fp8-mb768 /tmp/d1000.jsonl --quantization FP8 --kv-cache-dtype fp8 --max-batch-size 768 ;;
    pdl-ab)  # programmatic dependent launch: GPU tests with it on, then batch-1 decode off / on
      TRITIUM_PDL=1 timeout 420 python3 -m pytest -q -p no:cacheprovider --maxfail=3 tests/gpu/test_weight_streaming_gpu.py \
        tests/gpu/test_gpu_engine.py -k "not saved_engine" 2>&1 | tee "$LOGS/pytest-pdl.log" | tail -4
      for q in bf16 FP8 W4A16; do
        flags=(); [ "$q" = bf16 ] || flags=(--quantization "$q")
        TRITIUM_PDL=0 latency "$q-pdl-off" "${flags[@]}"
        TRITIUM_PDL=1 latency "$q-pdl-on" "${flags[@]}"
      done ;;
    mixed-split-ab)  # FP8 offline 128/128, mixed steps' decodes through the prefill kernel vs the decode kernel; 1000/1000
      dataset /tmp/d128.jsonl 4096 128 128
      TRITIUM_MIXED_DECODE_SPLIT=0 offline 128-fp8-nosplit /tmp/d128.jsonl --quantization FP8 --kv-cache-dtype fp8
      offline 128-fp8-split /tmp/d128.jsonl --quantization FP8 --kv-cache-dtype fp8
      dataset /tmp/d1000.jsonl 1024 1000 1000
      offline 1000-fp8 /tmp/d1000.jsonl --quantization FP8 --kv-cache-dtype fp8 ;;
    policy)
      dataset /tmp/d1000.jsonl 1024 1000 1000
      for p in MAX_UTILIZATION GUARANTEED_NO_EVICT; do offline "1000-$p" /tmp/d1000.jsonl --capacity-scheduler-policy $p; done ;;
    serve)
      # the same engine offline first: the server should lose under 10% to it (issue 8)
      dataset /tmp/d467.jsonl "${SAT_PROMPTS:-1536}" 467 256
      offline 467-conc512 /tmp/d467.jsonl --concurrency 512 --max-seq-len 4096
      start_server serve.log "${SERVE_TIMEOUT:-330}" --log-level info
      RUN_TIMEOUT=${BENCH_SERVE_TIMEOUT:-240} saturation sat --num-prompts "${SAT_PROMPTS:-1536}" 2>&1 \
        | tee "$LOGS/serve-sat.log" | tail -30
      RUN_TIMEOUT=${BENCH_SERVE_TIMEOUT:-240} tritium bench serve --num-prompts "${RATE_PROMPTS:-60}" --input-mean 467 \
        --output-mean 256 --vocab-size "$VOCAB" --request-rate 2 --result-json "$LOGS/serve-rate2.json" 2>&1 \
        | tee "$LOGS/serve-rate2.log" | tail -30
      stop_server
      tail -5 "$LOGS/serve.log" ;;
    serve-rate2)  # only the server at 2 requests/s (TTFT / ITL targets; 100 prompts: a few slow ones in 40 moved the mean ~1 ms)
      start_server serve-rate2.log "${SERVE_TIMEOUT:-150}" --log-level info
      RUN_TIMEOUT=${BENCH_SERVE_TIMEOUT:-120} tritium bench serve --ready-timeout 120 --num-prompts "${RATE_PROMPTS:-100}" \
        --input-mean 467 --output-mean 256 --vocab-size "$VOCAB" --request-rate 2 \
        --result-json "$LOGS/serve-rate2.json" --save-detailed 2>&1 | tee "$LOGS/serve-rate2-bench.log" \
        | grep -E "duration|Output token|(Mean|P50|P99) (TTFT|TPOT|ITL)|Failed"
      stop_server ;;
    late-schedule-ab)  # the 2 req/s run without and with late scheduling (the default)
      for late in 0 1; do
        TRITIUM_LATE_SCHEDULE=$late start_server "serve-rate2-late$late.log" "${SERVE_TIMEOUT:-150}" --log-level info
        RUN_TIMEOUT=${BENCH_SERVE_TIMEOUT:-120} tritium bench serve --ready-timeout 120 --num-prompts "${RATE_PROMPTS:-100}" \
          --input-mean 467 --output-mean 256 --vocab-size "$VOCAB" --request-rate 2 \
          --result-json "$LOGS/serve-rate2-late$late.json" 2>&1 | tee "$LOGS/serve-rate2-late$late-bench.log" \
          | grep -E "(Mean|P50|P99) (TTFT|ITL)|Failed" | sed "s/^/late=$late /"
        stop_server
      done ;;
    prefill-ab)  # 467-token prefills one at a time, with and without the prefill CUDA graphs
      timeout 200 python3 scripts/gpu_speed_check.py --sections prefill-ab 2>&1 | tee "$LOGS/prefill-ab.log" \
        | grep -E "^\[prefill|Error|error" ;;
    prefill-timeline)
      timeout 300 python3 scripts/gpu_speed_check.py --sections prefill-timeline 2>&1 | tee "$LOGS/prefill-timeline.log" \
        | grep -E "^\[prefill|captured|Error|error" ;;
    fp8-pairs-ab)
      TRITIUM_FP8_KV_PAIRS=1 timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kv_quant_kernels.py \
        tests/kernels/test_mixed_step_attention.py tests/gpu/test_quantization_gpu.py -k "kv or mixed or pairs" 2>&1 \
        | tee "$LOGS/pytest-fp8-pairs.log" | tail -4
      for pairs in 0 1; do
        TRITIUM_FP8_KV_PAIRS=$pairs timeout 200 python3 scripts/bench_decode_attention.py --kv fp8 --json "$LOGS/attn-pairs$pairs.json" 2>&1 \
          | tee "$LOGS/attn-pairs$pairs.log" | grep -iE "fp8" | sed "s/^/pairs=$pairs /" | head -12
      done
      latency bf16-8k --input-len 8000 --iterations 3
      for pairs in 0 1; do TRITIUM_FP8_KV_PAIRS=$pairs latency "kvfp8-8k-pairs$pairs" --kv-cache-dtype fp8 --input-len 8000 \
        --iterations 3; done ;;
    fp8-pairs-offline)  # FP8 + FP8 KV 1000/1000 at max batch 768, the cache read as bytes, then as pairs
      dataset /tmp/d1000.jsonl 1024 1000 1000
      for pairs in 0 1; do TRITIUM_FP8_KV_PAIRS=$pairs offline "1000-fp8-pairs$pairs" /tmp/d1000.jsonl --quantization FP8 \
        --kv-cache-dtype fp8 --max-batch-size 768; done ;;
    fp8-pairs-auto)  # the default (pairs only in split decodes): batch 1 at 8,000 tokens bf16 / FP8 KV, FP8 1000/1000
      latency bf16-8k --input-len 8000 --iterations 3
      latency kvfp8-8k-auto --kv-cache-dtype fp8 --input-len 8000 --iterations 3
      dataset /tmp/d1000.jsonl 1024 1000 1000
      offline 1000-fp8-auto /tmp/d1000.jsonl --quantization FP8 --kv-cache-dtype fp8 --max-batch-size 768 ;;
    int4-asm)
      timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_weight_streaming_gpu.py -k "nibble or int4 or quantized" \
        2>&1 | tee "$LOGS/pytest-int4-asm.log" | tail -4
      timeout ${GEMV_TIMEOUT:-200} python3 scripts/bench_quant_gemv.py --rows 1 16 --candidates 2>&1 | tee "$LOGS/gemv.log" \
        | grep -iE "int4|asm" | head -40
      latency bf16
      latency W4A16 --quantization W4A16 ;;
    diag-fp8)  # the tiny FP8 engine's GPU vs CPU logits, with parts of the FP8 linear swapped
      timeout 200 python3 scripts/diag_fp8_engine.py 2>&1 | tee "$LOGS/diag-fp8.log" | grep -E "^\[diag|Error|error" ;;
    prefill-graph-tests)  # the prefill graphs against Hugging Face and the eager step, on the GPU
      timeout 200 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_prefill_graph_replay.py \
        tests/kernels/test_act_quant.py tests/gpu/test_gpu_engine.py -k "prefill or graphs_overlap or quant or profile" \
        2>&1 | tee "$LOGS/pytest-prefill.log" | tail -15
      timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_weight_streaming_gpu.py -k "fused or exponent" 2>&1 \
        | tee "$LOGS/pytest-fused.log" | tail -5 ;;
    dequant-tests)  # one-pass weight dequantization (weight-only prefill) on the GPU, small and real sizes
      timeout 150 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_dequant.py \
        tests/gpu/test_weight_streaming_gpu.py -k "dequant" 2>&1 | tee "$LOGS/pytest-dequant.log" | tail -5 ;;
    serve-sat)  # only the server's saturation run, with $SERVE_FLAGS (e.g. --no-engine-process)
      tag=$(echo "${SERVE_FLAGS:-default}" | tr -c 'a-z0-9\n' '-')
      start_server "serve-$tag.log" "${SERVE_TIMEOUT:-200}" ${SERVE_FLAGS:-}
      RUN_TIMEOUT=${BENCH_SERVE_TIMEOUT:-180} saturation "sat-$tag" --num-prompts "${SAT_PROMPTS:-1536}" 2>&1 \
        | tee "$LOGS/serve-sat-$tag.log" | grep -E "duration|Output token|Mean (TTFT|TPOT|ITL)|P50 ITL|Failed"
      stop_server ;;
    serve-profile)  # where the server's time goes at saturation: py-spy on the front, the engine
      # process and the client (.tools/ carries the py-spy wheel), CPU use of each
      python3 -m pip install -q --no-index --no-deps --target /tmp/pyspy .tools/py_spy*.whl || exit 1
      start_server serve-prof.log 300 ${SERVE_FLAGS:-}
      RUN_TIMEOUT=200 saturation prof --num-prompts "${PROF_PROMPTS:-1024}" > "$LOGS/serve-prof-bench.log" 2>&1 &
      bench=$!
      until curl -sf localhost:8000/health >/dev/null; do sleep 1; done
      sleep 25  # into the steady state (the first 512 prompts' prefill is over)
      front=$(pgrep -f "^python3 -m tritium.entrypoints.cli serve" | head -1)
      engine=$(pgrep -f "spawn_main" | head -1)
      client=$(pgrep -f "^python3 -m tritium.entrypoints.cli bench serve" | head -1)
      echo "front $front engine $engine client $client"
      for who in front engine client; do
        /tmp/pyspy/bin/py-spy record -p "${!who}" -d 12 -r 250 --threads --nonblocking -f raw \
          -o "$LOGS/spy-$who.txt" > "$LOGS/spy-$who.log" 2>&1 &
      done
      top -b -n 3 -d 4 -p "$front,$engine,$client" | grep -E "^ *[0-9]+ " | tail -9
      wait "$bench"; tail -32 "$LOGS/serve-prof-bench.log"
      stop_server
      grep -vE "HTTP/1.1|^INFO" "$LOGS/serve-prof.log" | tail -40 ;;
    prefill-spy)  # where a lone 467-token prefill step's host time goes (the 2 req/s TTFT)
      python3 -m pip install -q --no-index --no-deps --target /tmp/pyspy .tools/py_spy*.whl || exit 1
      timeout 200 python3 scripts/gpu_speed_check.py --sections prefill-loop > "$LOGS/prefill-loop.log" 2>&1 &
      loop=$!
      until grep -q "prefill-loop\] warm" "$LOGS/prefill-loop.log" || ! kill -0 $loop 2>/dev/null; do sleep 1; done
      pid=$(pgrep -P "$loop" | head -1)  # the python under `timeout`
      /tmp/pyspy/bin/py-spy record -p "$pid" -d 15 -r 500 --threads --nonblocking -f raw -o "$LOGS/spy-prefill.txt" \
        > "$LOGS/spy-prefill.log" 2>&1
      wait $loop; grep -E "^\[prefill" "$LOGS/prefill-loop.log"; tail -3 "$LOGS/spy-prefill.log" ;;
    engine-load)
      rm -rf /tmp/eng-fp8
      mkdir -p /tmp/l8b && cp tritium/bench/model_shapes/$SHAPE/config.json /tmp/l8b/config.json
      start=$SECONDS
      timeout 200 python3 -m tritium.entrypoints.cli build /tmp/l8b --load-format dummy \
        --dtype bfloat16 --output /tmp/eng-fp8 --quantization FP8 2>&1 | tee "$LOGS/engine-build.log" | tail -5
      echo "build wall $((SECONDS - start)) s"; du -sh /tmp/eng-fp8
      load_engine warm-triton-cache
      TRITIUM_GRAPH_WARMUP=all load_engine warm-every-graph-size  # the graphs' warm-up runs, as before
      load_engine warm-triton-cache-again
      # a machine that never ran these kernels: Triton compiles what the engine uses (the saved
      # tile choices spare it the losing candidates)
      rm -rf "${TRITON_CACHE_DIR:-$HOME/.triton/cache}"
      load_engine cold-triton-cache
      ;;
    mixed-test-stacks)  # the eager mixed-step GPU test alone; every thread's stack if it runs past 120 s
      timeout -s ABRT 120 python3 -m pytest -x -q -s -p no:cacheprovider tests/gpu/test_gpu_engine.py \
        -k eager_mixed > "$LOGS/pytest-mixed-stacks.log" 2>&1
      grep -vE "^\s*$" "$LOGS/pytest-mixed-stacks.log" | tail -60 ;;
    *) echo "unknown stage $stage" >&2 ;;
  esac
done
