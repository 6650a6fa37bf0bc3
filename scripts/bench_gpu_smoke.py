"""GPU smoke benchmark: offline throughput on random ("dummy") weights from a real config.

    python scripts/bench_gpu_smoke.py CONFIG.json [--prompts 64] [--input 128] [--output 128]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from tritium import BuildConfig, SamplingParams
from tritium.llm.llm import LLM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--input", type=int, default=128)
    ap.add_argument("--output", type=int, default=128)
    ap.add_argument("--hf-baseline", action="store_true", help="also time transformers generate, same weights' shapes")
    args = ap.parse_args()
    folder = tempfile.mkdtemp()
    shutil.copy(args.config, os.path.join(folder, "config.json"))
    start = time.perf_counter()
    llm = LLM(folder, load_format="dummy", build_config=BuildConfig(max_batch_size=args.prompts, max_seq_len=4096))
    print(f"engine up in {time.perf_counter() - start:.1f} s; {llm.kv_cache_plan.describe()}")
    prompts = [[(i * 7919 + j * 31) % 32000 + 10 for j in range(args.input)] for i in range(args.prompts)]
    params = SamplingParams(max_tokens=args.output, temperature=0.0, ignore_eos=True)
    llm.generate(prompts[:2], SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
    for batch in (1, args.prompts):
        t = time.perf_counter()
        outs = llm.generate(prompts[:batch], params, use_tqdm=False)
        dt = time.perf_counter() - t
        n = sum(len(o.outputs[0].token_ids) for o in outs)
        print(f"tritium      batch {batch:4d}: {n / dt:9.1f} output tok/s  ({dt:.2f} s for {n} tokens)")
    llm.shutdown()
    del llm
    if args.hf_baseline:
        bench_hf(folder, prompts, args.output)


def bench_hf(folder: str, prompts: list[list[int]], output: int) -> None:
    """transformers generate on random bf16 weights of the same config: the baseline."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.cuda.empty_cache()
    config = AutoConfig.from_pretrained(folder)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    gen = dict(max_new_tokens=output, min_new_tokens=output, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(torch.tensor(prompts[:2], device="cuda"), max_new_tokens=4, do_sample=False, pad_token_id=0)
        for batch in (1, len(prompts)):
            ids = torch.tensor(prompts[:batch], device="cuda")
            torch.cuda.synchronize()
            t = time.perf_counter()
            out = model.generate(ids, **gen)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
            n = batch * (out.shape[1] - ids.shape[1])
            print(f"transformers batch {batch:4d}: {n / dt:9.1f} output tok/s  ({dt:.2f} s for {n} tokens)")


if __name__ == "__main__":
    main()
