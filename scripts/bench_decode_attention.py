"""Paged attention kernels at Llama-3.1-8B sizes on a GPU (32 query heads, 8 KV heads, head dim 128,
16-token blocks on shuffled blocks): decode steps of a large batch (the 1000/1000 offline
run's shape: 512 sequences of 1000-2000 keys), small batches with split-KV, and a mixed step
(decodes plus prefill chunks) through the backend with and without the decode split; bf16 and
FP8 caches. Reports microseconds a call, the cache bytes read per second, and the largest error
against a float64 reference on a few sequences; with --baseline MODULE, the same cases through
that module's kernels (an earlier copy of the kernels) first.

    python scripts/bench_decode_attention.py [--baseline scripts/_old_attention.py] [--json out.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys

import torch
import triton.testing

sys.path.insert(0, ".")
from tritium.attention.backend import AttentionMetadata  # noqa: E402
from tritium.attention.triton_backend import TritonAttentionBackend  # noqa: E402
from tritium.kernels import decode_attention as da  # noqa: E402
from tritium.kernels.decode_attention import num_kv_splits  # noqa: E402

HEADS, KV_HEADS, DIM, BLOCK = 32, 8, 128, 16
VARIANTS = [  # (block_n, num_warps, num_stages[, heads_fastest]) of the decode kernel
    (64, 4, 2), (64, 2, 2), (64, 2, 2, 1), (64, 4, 2, 1), (64, 2, 1), (64, 4, 1), (32, 2, 2), (32, 2, 1),
    (128, 2, 2),
]  # one warp spills (255 registers, offline count)


def make_cache(seq_lens: list[int], kv_dtype: torch.dtype, seed: int = 0):
    """A cache holding the sequences on shuffled blocks: (cache, block_tables, kv_scale or None)."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    need = [-(-n // BLOCK) for n in seq_lens]
    blocks = sum(need) + 8
    values = torch.randn(2, blocks, BLOCK, KV_HEADS, DIM, device="cuda", generator=gen, dtype=torch.bfloat16)
    scale = None
    if kv_dtype == torch.float8_e4m3fn:
        scale = torch.full((2, KV_HEADS), 4.0 / 448.0, device="cuda")
        cache = (values.float() / scale[:, None, None, :, None]).clamp(-448, 448).to(kv_dtype)
    else:
        cache = values
    del values
    perm = torch.randperm(blocks, device="cuda", generator=gen).int()
    table = torch.zeros(len(seq_lens), max(need), dtype=torch.int32, device="cuda")
    used = 0
    for s, n in enumerate(need):
        table[s, :n] = perm[used:used + n]
        used += n
    return cache, table, scale


def reference(q, cache, table, scale, seq_len, row, kv_scale, q_pos=None):
    """float64 attention of q [n, H, D] over sequence `row` (its first seq_len keys)."""
    pos = torch.arange(seq_len, device="cuda")
    blocks = table[row].long()[pos // BLOCK]
    k = cache[0, blocks, pos % BLOCK].double()  # [L, KVH, D]
    v = cache[1, blocks, pos % BLOCK].double()
    if kv_scale is not None:
        k = k * kv_scale[0].double()[None, :, None]
        v = v * kv_scale[1].double()[None, :, None]
    k = k.repeat_interleave(HEADS // KV_HEADS, 1)
    v = v.repeat_interleave(HEADS // KV_HEADS, 1)
    s = torch.einsum("nhd,lhd->hnl", q.double(), k) * scale
    q_pos = torch.full((q.shape[0],), seq_len - 1, device="cuda") if q_pos is None else q_pos
    s = s.masked_fill(pos[None, None, :] > q_pos[None, :, None], float("-inf"))
    return torch.einsum("hnl,lhd->nhd", s.softmax(-1), v)


def time_us(fn) -> float:
    return triton.testing.do_bench(fn, warmup=10, rep=60) * 1e3


def decode_cases(module, label: str, kv_dtype, results: dict, variants) -> None:
    torch.manual_seed(0)
    scale = DIM ** -0.5
    for batch, lo, hi in ((512, 1000, 2000), (256, 1000, 2000), (64, 1000, 2000), (1, 4096, 4096), (8, 2048, 2048)):
        seq_lens = torch.randint(lo, hi + 1, (batch,)).tolist()
        cache, table, kv_scale = make_cache(seq_lens, kv_dtype)
        lens = torch.tensor(seq_lens, dtype=torch.int32, device="cuda")
        q = torch.randn(batch, HEADS, DIM, device="cuda", dtype=torch.bfloat16)
        splits = num_kv_splits(batch, KV_HEADS, max(seq_lens))
        nbytes = sum(seq_lens) * KV_HEADS * DIM * 2 * cache.element_size()
        few = variants[:1] + [v for v in ((64, 2, 2), (64, 4, 2, 1), (128, 2, 2)) if v in variants]  # small batches
        for variant in variants if batch >= 256 or len(variants) <= 4 else few:
            kwargs = {} if variant is None else dict(block_n=variant[0], num_warps=variant[1], num_stages=variant[2],
                                                     heads_fastest=bool(variant[3:] and variant[3]))
            out = torch.empty_like(q)

            def call():
                module.paged_decode_attention(q, cache, table, lens, scale, num_splits=splits, out=out,
                                              kv_scale=kv_scale, **kwargs)
            try:
                call()
                us = time_us(call)
            except Exception as e:  # a variant that does not compile (shared memory): reported, not fatal
                print(f"{label} {kv_dtype} b{batch} {variant}: failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
                continue
            err = max((out[r:r + 1].double() - reference(q[r:r + 1], cache, table, scale, seq_lens[r], r, kv_scale))
                      .abs().max().item() for r in (0, batch - 1))
            key = f"decode {label} {str(kv_dtype).split('.')[-1]} b{batch} ctx{lo}-{hi} splits{splits} {variant}"
            results[key] = dict(us=us, tb_s=nbytes / us / 1e6, max_err=err)
            print(f"{key}: {us:8.1f} us  {nbytes / us / 1e6:5.2f} TB/s  max err {err:.2e}", flush=True)



def mixed_case(kv_dtype, results: dict) -> None:
    """500 decodes (1000-2000 keys) then 8 fresh 1000-token prompts, one layer's attention."""
    torch.manual_seed(1)
    decodes = torch.randint(1000, 2001, (500,)).tolist()
    shapes = [(n - 1, 1) for n in decodes] + [(0, 1000)] * 8
    seq_lens = [c + n for c, n in shapes]
    cache, table, kv_scale = make_cache(seq_lens, kv_dtype, seed=2)
    q_lens = [n for _, n in shapes]
    qsl = [0] + torch.tensor(q_lens).cumsum(0).tolist()
    q = torch.randn(qsl[-1], HEADS, DIM, device="cuda", dtype=torch.bfloat16)
    kv = torch.zeros(qsl[-1], KV_HEADS, DIM, device="cuda", dtype=torch.bfloat16)
    backend = TritonAttentionBackend()
    for num_decodes in (0, 500):
        meta = AttentionMetadata(
            num_actual_tokens=qsl[-1], query_start_loc=torch.tensor(qsl, dtype=torch.int32, device="cuda"),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device="cuda"), block_tables=table,
            slot_mapping=torch.full((qsl[-1],), -1, dtype=torch.int64, device="cuda"), max_query_len=max(q_lens),
            max_seq_len=max(seq_lens), query_start_loc_cpu=qsl, seq_lens_cpu=seq_lens, num_decodes=num_decodes)
        holder = {}

        def call():
            holder["out"] = backend.forward(q, kv, kv, cache, meta, DIM ** -0.5, kv_scale=kv_scale)
        call()
        us = time_us(call)
        out = holder["out"]
        last = len(shapes) - 1  # the last prompt's final 4 rows, and the first decode
        err = max((out[qsl[last + 1] - 4:qsl[last + 1]].double()
                   - reference(q[qsl[last + 1] - 4:qsl[last + 1]], cache, table, DIM ** -0.5, 1000, last, kv_scale,
                               torch.arange(996, 1000, device="cuda"))).abs().max().item(),
                  (out[0:1].double() - reference(q[0:1], cache, table, DIM ** -0.5, seq_lens[0], 0, kv_scale))
                  .abs().max().item())
        key = f"mixed {str(kv_dtype).split('.')[-1]} 500 decodes + 8x1000 prompt, num_decodes={num_decodes}"
        results[key] = dict(us=us, max_err=err)
        print(f"{key}: {us:8.1f} us  max err {err:.2e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", help="a module file with paged_decode_attention (an earlier copy of the kernel)")
    ap.add_argument("--json")
    ap.add_argument("--kv", choices=("fp8", "bf16"), nargs="+", default=["fp8", "bf16"])
    ap.add_argument("--variants", nargs="+", help="block_n,num_warps,num_stages[,heads_fastest] (default: a sweep)")
    args = ap.parse_args()
    print(torch.__version__, torch.cuda.get_device_name(), f"decode BLOCK_N default {da.BLOCK_N}", flush=True)
    results: dict = {}
    variants = [tuple(map(int, v.split(","))) for v in args.variants] if args.variants else VARIANTS
    for kv_dtype in [{"fp8": torch.float8_e4m3fn, "bf16": torch.bfloat16}[k] for k in args.kv]:
        if args.baseline:
            spec = importlib.util.spec_from_file_location("baseline_attention", args.baseline)
            baseline = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(baseline)
            decode_cases(baseline, "baseline", kv_dtype, results, [None])
        decode_cases(da, "new", kv_dtype, results, variants)
        mixed_case(kv_dtype, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
