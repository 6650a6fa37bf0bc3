"""Output tokens/s of tritium vs Hugging Face transformers `generate`, same model, same machine, same run.

    python scripts/bench_cpu_vs_hf.py [--model PATH] [--dtype auto] [--tokens 64] [--batch 1 16]

Both generate greedily, exactly --tokens new tokens per prompt (EOS ignored); the time covers
prefill and decode of the whole batch. Prompts are sentences of real English text.
"""
from __future__ import annotations

import argparse
import json
import os
import time

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


def bench_hf(path: str, batch: int, tokens: int) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = dict(gguf_file=os.path.basename(path)) if path.endswith(".gguf") else {}
    root = os.path.dirname(path) if path.endswith(".gguf") else path
    tok = AutoTokenizer.from_pretrained(root, **kw)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(root, torch_dtype=torch.float32, **kw).eval()
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


def main() -> None:
    from tritium import BuildConfig, KvCacheConfig
    from tritium.default_model import default_model_path
    from tritium.llm.llm import LLM

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", nargs="+", default=["auto"])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()
    path = args.model or default_model_path()
    rows = []
    for dtype in args.dtype:
        with LLM(path, dtype=dtype, build_config=BuildConfig(max_batch_size=max(args.batch), max_seq_len=512),
                 kv_cache_config=KvCacheConfig()) as llm:
            for b in args.batch:
                rows.append({"engine": f"tritium ({llm.model_config.dtype})".replace("torch.", ""), "batch": b,
                             "tok_s": bench_tritium(llm, b, args.tokens)})
                print(rows[-1], flush=True)
    if not args.skip_hf:
        for b in args.batch:
            rows.append({"engine": "transformers (float32)", "batch": b, "tok_s": bench_hf(path, b, args.tokens)})
            print(rows[-1], flush=True)
    print(f"\n{'engine':32} {'batch':>5} {'output tok/s':>12}   ({torch.get_num_threads()} threads, {args.tokens} tokens)")
    for r in rows:
        print(f"{r['engine']:32} {r['batch']:>5} {r['tok_s']:>12.1f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
