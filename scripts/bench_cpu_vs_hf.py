"""Output tokens/s of tritium vs Hugging Face transformers `generate`, same model, same machine, same run.

    python scripts/bench_cpu_vs_hf.py [--model PATH] [--dtype auto] [--tokens 64] [--batch 1 16] [--runs 5]

Both generate greedily, exactly --tokens new tokens per prompt (EOS ignored); the time covers
prefill and decode of the whole batch. Prompts are sentences of real English text. Each run
builds every engine afresh; the summary gives the median and range over runs and each dtype's
ratio to transformers within the same run. The CPU features torch dispatches to are printed
first: to measure an AVX2-only CPU on an AVX-512 one, run with
`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`.

Every engine runs in a thread of its own that ends before the next starts: an OpenMP pool left
alive in another thread would slow the next engine's parallel regions (libgomp throttles its
spin-waits when it counts more threads than cores).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import torch

PROMPTS = [
    "The history of the Roman Empire begins",
    "In a quiet village by the sea, an old fisherman",
    "The most important idea in computer science is",
    "Once upon a time, in a kingdom far away,",
    "To bake a loaf of bread, first you",
    "The theory of relativity tells us that",
    "My favourite book is about a young girl who",
    "The stock market fell sharply today because",
    "Photosynthesis is the process by which plants",
    "When the storm finally passed, the children",
    "The best way to learn a new language is",
    "Scientists recently discovered a new species of",
    "The city at night was full of lights and",
    "He opened the letter slowly and read",
    "A good cup of coffee requires",
    "The spacecraft approached the red planet and",
]


def load_hf(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = dict(gguf_file=os.path.basename(path)) if path.endswith(".gguf") else {}
    root = os.path.dirname(path) if path.endswith(".gguf") else path
    tok = AutoTokenizer.from_pretrained(root, **kw)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(root, torch_dtype=torch.float32, **kw).eval()
    return tok, model


def bench_hf(tok, model, batch: int, tokens: int) -> float:
    enc = tok(PROMPTS[:batch], return_tensors="pt", padding=True)
    gen = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)  # warm-up
        start = time.perf_counter()
        out = model.generate(**enc, **gen)
        elapsed = time.perf_counter() - start
    assert out.shape[1] - enc["input_ids"].shape[1] == tokens
    return batch * tokens / elapsed


def bench_tritium(llm, batch: int, tokens: int) -> float:
    from tritium import SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    llm.generate(PROMPTS[:batch], SamplingParams(max_tokens=4, temperature=0.0), use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outs = llm.generate(PROMPTS[:batch], params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    assert all(len(o.outputs[0].token_ids) == tokens for o in outs)
    return batch * tokens / elapsed


def in_own_thread(fn, *args):
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def cpu_description() -> str:
    from tritium.config import cpu_capability, cpu_has_native_bf16

    with open("/proc/cpuinfo") as f:
        flags = set(next((line.split() for line in f if line.startswith("flags")), []))
    shown = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    env = [f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
           if k in os.environ]
    return (f"CPU flags: {' '.join(shown)}; torch dispatch: {cpu_capability()}, native bf16: {cpu_has_native_bf16()}; "
            f"env: {' '.join(env) or 'none'}; {torch.get_num_threads()} threads")


def main() -> None:
    from tritium import BuildConfig, KvCacheConfig
    from tritium.default_model import default_model_path
    from tritium.llm.llm import LLM

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", nargs="+", default=["auto"])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()
    path = args.model or default_model_path()
    print(cpu_description(), flush=True)
    hf = None if args.skip_hf else in_own_thread(load_hf, path)
    runs: list[dict[tuple[str, int], float]] = []
    for run in range(args.runs):
        rates: dict[tuple[str, int], float] = {}
        for dtype in args.dtype:
            llm = LLM(path, dtype=dtype, build_config=BuildConfig(max_batch_size=max(args.batch), max_seq_len=512),
                      kv_cache_config=KvCacheConfig())
            name = f"tritium ({llm.model_config.dtype})".replace("torch.", "")
            with llm:
                for b in args.batch:
                    rates[name, b] = bench_tritium(llm, b, args.tokens)
        if hf is not None:
            for b in args.batch:
                rates["transformers (float32)", b] = in_own_thread(bench_hf, *hf, b, args.tokens)
        print(f"run {run + 1}: " + json.dumps({f"{e} b{b}": round(v, 1) for (e, b), v in rates.items()}), flush=True)
        runs.append(rates)

    print(f"\n{'engine':32} {'batch':>5} {'output tok/s: median (min-max)':>32} {'vs transformers, per run':>34}")
    hf_name = "transformers (float32)"
    for engine, b in runs[0]:
        vals = [r[engine, b] for r in runs]
        line = f"{engine:32} {b:>5} {statistics.median(vals):>13.1f} ({min(vals):.1f}-{max(vals):.1f})"
        if (hf_name, b) in runs[0] and engine != hf_name:
            ratios = [r[engine, b] / r[hf_name, b] for r in runs]
            line += f"   {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        print(line)
    print(json.dumps([{f"{e} b{b}": v for (e, b), v in r.items()} for r in runs]))


if __name__ == "__main__":
    main()
