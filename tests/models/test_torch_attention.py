"""Torch attention backend against dense per-request attention: decode (batched, per-step plan),
prefill and mixed steps (batched under a block-diagonal mask, and request by request), padding."""
from __future__ import annotations

import pytest
import torch

import tritium.attention.torch_backend as backend_mod
from tritium.attention.backend import AttentionMetadata
from tritium.attention.torch_backend import TorchAttentionBackend

HEADS, KV_HEADS, D, BLOCK, NUM_BLOCKS = 6, 2, 16, 4, 64
SCALE = D ** -0.5


def make_step(context_lens, q_lens, dtype, seed=0):
    """Random requests with scrambled block tables; their context already in the cache.
    Returns (q, k, v, kv_cache, meta, reference output [T, HEADS, D] float32)."""
    g = torch.Generator().manual_seed(seed)
    kv_cache = torch.randn(2, NUM_BLOCKS, BLOCK, KV_HEADS, D, generator=g).to(dtype)
    free = torch.randperm(NUM_BLOCKS, generator=g).tolist()
    seq_lens = [c + n for c, n in zip(context_lens, q_lens)]
    max_blocks = max(-(-s // BLOCK) for s in seq_lens)
    tables = torch.zeros(len(seq_lens), max_blocks, dtype=torch.int32)
    qs, ks, vs, slots, refs = [], [], [], [], []
    for r, (c, n) in enumerate(zip(context_lens, q_lens)):
        blocks = [free.pop() for _ in range(-(-(c + n) // BLOCK))]
        tables[r, :len(blocks)] = torch.tensor(blocks, dtype=torch.int32)
        pos = torch.arange(c + n)
        req_slots = torch.tensor(blocks)[pos // BLOCK] * BLOCK + pos % BLOCK  # [c + n]
        k_all = torch.randn(c + n, KV_HEADS, D, generator=g).to(dtype)
        v_all = torch.randn(c + n, KV_HEADS, D, generator=g).to(dtype)
        flat = kv_cache.view(2, -1, KV_HEADS, D)
        flat[0, req_slots[:c]], flat[1, req_slots[:c]] = k_all[:c], v_all[:c]  # the cached context
        q = torch.randn(n, HEADS, D, generator=g).to(dtype)
        qs.append(q), ks.append(k_all[c:]), vs.append(v_all[c:]), slots.append(req_slots[c:])
        kh = k_all.float().repeat_interleave(HEADS // KV_HEADS, dim=1).transpose(0, 1)  # [HEADS, c + n, D]
        vh = v_all.float().repeat_interleave(HEADS // KV_HEADS, dim=1).transpose(0, 1)
        scores = q.float().transpose(0, 1) @ kh.transpose(1, 2) * SCALE  # [HEADS, n, c + n]
        causal = torch.arange(c + n)[None, :] <= (c + torch.arange(n))[:, None]  # [n, c + n]
        probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        refs.append((probs @ vh).transpose(0, 1))  # [n, HEADS, D]
    qsl = [0]
    for n in q_lens:
        qsl.append(qsl[-1] + n)
    meta = AttentionMetadata(
        num_actual_tokens=qsl[-1], query_start_loc=torch.tensor(qsl, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32), block_tables=tables,
        slot_mapping=torch.cat(slots), max_query_len=max(q_lens), max_seq_len=max(seq_lens),
        query_start_loc_cpu=qsl, seq_lens_cpu=seq_lens)
    return torch.cat(qs), torch.cat(ks), torch.cat(vs), kv_cache, meta, torch.cat(refs)


TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}
CASES = {
    "decode": ([5, 17, 0, 30], [1, 1, 1, 1]),
    "decode-one": ([9], [1]),
    "prefill": ([0, 0, 0], [7, 1, 12]),
    "mixed": ([0, 13, 3], [9, 1, 6]),  # a new prompt, a decode, a chunk after cached context
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("batched", [True, False])
def test_matches_dense_attention(monkeypatch, dtype, case, batched):
    if not batched:
        monkeypatch.setattr(backend_mod, "MAX_BATCHED_PAIRS", 0)  # request by request
    q, k, v, kv_cache, meta, ref = make_step(*CASES[case], dtype)
    out = TorchAttentionBackend().forward(q, k, v, kv_cache, meta, SCALE)
    assert out.shape == q.shape and out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, **TOL[dtype])
    # the step's k/v landed in their slots
    flat = kv_cache.view(2, -1, KV_HEADS, D)
    assert torch.equal(flat[0, meta.slot_mapping], k) and torch.equal(flat[1, meta.slot_mapping], v)


def test_plan_is_built_once_per_step_and_padding_rows_are_ignored():
    q, k, v, kv_cache, meta, ref = make_step([4, 20], [1, 1], torch.float32)
    backend = TorchAttentionBackend()
    out = backend.forward(q, k, v, kv_cache, meta, SCALE)
    plan = meta.backend_cache["torch_decode"]
    again = backend.forward(q, k, v, kv_cache, meta, SCALE)  # the next layer reuses the plan
    assert meta.backend_cache["torch_decode"] is plan and torch.equal(out, again)
    pad = lambda t: torch.cat([t, torch.randn(3, *t.shape[1:])])  # noqa: E731
    padded = backend.forward(pad(q), pad(k), pad(v), kv_cache, meta, SCALE)
    assert padded.shape[0] == q.shape[0] + 3 and torch.equal(padded[:2], out)
    torch.testing.assert_close(out, ref, **TOL[torch.float32])
