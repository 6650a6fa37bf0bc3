"""Perplexity of every quantization method through the engine (LLM with quant_config: calibration,
the method's CPU or GPU path, the quantized KV cache), on a text file cut into windows of
--window tokens, each scored on its own (prompt logprobs of the text's tokens).

    PYTHONPATH=. python scripts/quant_perplexity.py                     # SmolLM2, tinyshakespeare
    PYTHONPATH=. python scripts/quant_perplexity.py --text my.txt --num-tokens 65536 --model ./llama

Prints a Markdown table (method, group size, perplexity, change from the unquantized model,
build seconds) for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import math
import os
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ../shared beside the main checkout (a worktree sits one level deeper)
DEFAULT_TEXT = next((p for p in (os.path.join(_ROOT, "..", "shared", "data", "tinyshakespeare.txt"),
                                 os.path.join(_ROOT, "..", "..", "shared", "data", "tinyshakespeare.txt"))
                     if os.path.isfile(p)), "tinyshakespeare.txt")
# (quant_algo, kv_cache_quant_algo, group_size): the methods, int4 at the default group
# size and at 32 (the embedded model's own Q4_1 block size).
METHODS = [(None, None, None), ("W8A16", None, None), ("FP8", None, None), ("FP8_PER_CHANNEL_PER_TOKEN", None, None),
           ("W8A8_SQ_PER_CHANNEL", None, None), (None, "FP8", None), (None, "INT8", None),
           ("W4A16", None, 128), ("W4A16", None, 32), ("W4A16_AWQ", None, 128), ("W4A16_AWQ", None, 32),
           ("W4A16_GPTQ", None, 128), ("W4A16_GPTQ", None, 32)]


def windows(text_path: str, tokenizer, num_tokens: int, window: int) -> list[list[int]]:
    with open(text_path, encoding="utf-8") as f:
        ids = tokenizer.encode(f.read(), add_special_tokens=False)[:num_tokens]
    return [ids[i:i + window] for i in range(0, len(ids) - window + 1, window)]


def perplexity(llm, chunks: list[list[int]]) -> float:
    from tritium import SamplingParams

    outs = llm.generate(chunks, SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
    nll, count = 0.0, 0
    for chunk, out in zip(chunks, outs):
        for token, position in zip(chunk[1:], out.prompt_logprobs[1:]):
            nll -= position[token].logprob
            count += 1
    return math.exp(nll / count)


def main() -> None:
    from tritium.llm.llm import LLM
    from tritium.quantization import QuantConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct (Q4_1 GGUF)")
    p.add_argument("--text", default=DEFAULT_TEXT)
    p.add_argument("--num-tokens", type=int, default=16384, help="tokens of the text scored")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default=None)
    p.add_argument("--only", nargs="*", help="methods to run (e.g. W4A16 FP8 kv:INT8)")
    args = p.parse_args()

    rows, base = [], None
    chunks = None
    for algo, kv, group in METHODS:
        name = algo or (f"kv:{kv}" if kv else "none")
        if args.only and name not in args.only and name != "none":
            continue
        quant = QuantConfig(quant_algo=algo, kv_cache_quant_algo=kv, group_size=group or 128) if algo or kv else None
        start = time.perf_counter()
        with LLM(args.model, dtype=args.dtype, device=args.device, quant_config=quant,
                 max_seq_len=args.window + 8, max_batch_size=8) as llm:
            built = time.perf_counter() - start
            if chunks is None:
                chunks = windows(args.text, llm.tokenizer, args.num_tokens, args.window)
            ppl = perplexity(llm, chunks)
        base = base or ppl
        rows.append((name, group or "", ppl, ppl / base - 1, built))
        print(f"{name} group={group}: {ppl:.3f} ({ppl / base - 1:+.2%}), built in {built:.1f} s", flush=True)
    print(f"\n{len(chunks)} windows of {args.window} tokens ({len(chunks) * args.window} tokens) of "
          f"{os.path.basename(args.text)}\n")
    print("| method | group | perplexity | vs unquantized | build s |\n|---|---|---|---|---|")
    for name, group, ppl, rel, built in rows:
        print(f"| {name} | {group} | {ppl:.3f} | {rel:+.2%} | {built:.1f} |")


if __name__ == "__main__":
    main()
