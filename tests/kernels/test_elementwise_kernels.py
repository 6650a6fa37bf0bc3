"""Fused RoPE + KV write, (add +) RMSNorm and SiLU*mul kernels against the torch layers they
replace on the GPU (themselves tested against Hugging Face)."""
from __future__ import annotations

import pytest
import torch

from tritium.kernels.rmsnorm import rms_norm
from tritium.kernels.rope_kv_write import rope_and_write_kv
from tritium.kernels.silu_mul import silu_and_mul
from tritium.layers.activation import SiluAndMul
from tritium.layers.norm import RMSNorm
from tritium.layers.rotary import get_rope

DTYPES = [torch.float32, torch.bfloat16]


def randn(*shape, dtype, device, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype).to(device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_heads,num_kv_heads,head_dim,block_size", [(4, 2, 64, 16), (6, 3, 128, 32), (3, 1, 96, 16)])
def test_rope_and_kv_write_match_torch(device, dtype, num_heads, num_kv_heads, head_dim, block_size):
    t = 7
    rope = get_rope(head_dim, 2048, 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                               "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    rope = rope.to(device)
    positions = torch.tensor([0, 5, 6, 100, 1000, 3, 4], device=device)
    qkv = randn(t, (num_heads + 2 * num_kv_heads) * head_dim, dtype=dtype, device=device, seed=0)
    q = qkv[:, :num_heads * head_dim].view(t, num_heads, head_dim)
    k = qkv[:, num_heads * head_dim:(num_heads + num_kv_heads) * head_dim].view(t, num_kv_heads, head_dim)
    v = qkv[:, (num_heads + num_kv_heads) * head_dim:].view(t, num_kv_heads, head_dim)
    q_ref, k_ref = rope(positions, q.float().clone(), k.float().clone())  # float32 torch reference
    v_ref = v.clone()

    num_blocks = 4
    cache = randn(2, num_blocks, block_size, num_kv_heads, head_dim, dtype=dtype, device=device, seed=1)
    before = cache.clone()
    slots = torch.tensor([3, block_size + 1, -1, 2 * block_size, 5, -1, 3 * block_size + 7], device=device)
    rope_and_write_kv(q, k, v, rope.cos_sin(positions), cache, slots)

    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(q.float(), q_ref, **tol)  # rotated in place, inside qkv
    torch.testing.assert_close(k.float(), k_ref, **tol)
    flat = cache.view(2, -1, num_kv_heads, head_dim)
    expected = before.view(2, -1, num_kv_heads, head_dim).clone()
    for i, s in enumerate(slots.tolist()):
        if s >= 0:
            expected[0, s], expected[1, s] = k[i], v_ref[i]
    assert torch.equal(flat, expected)  # written slots hold k/v, nothing else changed


@pytest.mark.parametrize("dtype", DTYPES)
def test_write_without_rotation_stores_k_and_v_as_given(device, dtype):
    k = randn(3, 2, 64, dtype=dtype, device=device, seed=4)
    v = randn(3, 2, 64, dtype=dtype, device=device, seed=5)
    q = randn(3, 4, 64, dtype=dtype, device=device, seed=6)
    q_before = q.clone()
    cache = torch.zeros(2, 2, 16, 2, 64, dtype=dtype, device=device)
    rope_and_write_kv(q, k, v, None, cache, torch.tensor([0, 17, 31], device=device))
    flat = cache.view(2, -1, 2, 64)
    assert torch.equal(flat[0, [0, 17, 31]], k) and torch.equal(flat[1, [0, 17, 31]], v)
    assert torch.equal(q, q_before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [64, 576, 1000])
def test_rms_norm_matches_layer(device, dtype, hidden):
    norm = RMSNorm(hidden, 1e-5, params_dtype=dtype).to(device)
    norm.weight.data.copy_(randn(hidden, dtype=dtype, device=device, seed=7))
    x = randn(5, hidden, dtype=dtype, device=device, seed=8)
    res = randn(5, hidden, dtype=dtype, device=device, seed=9)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-2, rtol=1.6e-2)  # 2 bf16 steps
    torch.testing.assert_close(rms_norm(x, norm.weight, 1e-5), norm.forward_native(x), **tol)
    ref_out, ref_res = norm.forward_native(x, res)
    res_k = res.clone()
    out = rms_norm(x, norm.weight, 1e-5, residual=res_k)
    # The new residual is x + residual in x's dtype (bit-exact in float32; Triton's interpreter
    # truncates float32 -> bfloat16 where the GPU rounds, so allow one bfloat16 step there).
    torch.testing.assert_close(res_k, ref_res, atol=0, rtol=0) if dtype == torch.float32 else \
        torch.testing.assert_close(res_k, ref_res, atol=1e-2, rtol=8e-3)
    torch.testing.assert_close(out, ref_out, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_and_mul_matches_layer(device, dtype):
    x = randn(4, 2 * 1536, dtype=dtype, device=device, seed=10) * 4
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-2, rtol=1.6e-2)  # 2 bf16 steps
    torch.testing.assert_close(silu_and_mul(x), SiluAndMul.forward_native(x), **tol)
