"""CPU linears (layers/cpu_linear.py): the oneDNN-packed copy (many rows) and ATen's gemv (one
bfloat16 row) against F.linear, and the plain fallback when packing is off."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tritium.layers import cpu_linear
from tritium.layers.cpu_linear import can_pack
from tritium.layers.embedding import ParallelLMHead, VocabParallelEmbedding
from tritium.layers.linear import QKVParallelLinear, ReplicatedLinear, RowParallelLinear

needs_mkldnn = pytest.mark.skipif(not can_pack(torch.zeros(2, 2)), reason="no oneDNN packing on this build")
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


def loaded(layer_cls, *args, dtype, bias=False, **kw):
    layer = layer_cls(*args, bias=bias, params_dtype=dtype, **kw)
    w = torch.randn(layer.weight.shape) / layer.weight.shape[1] ** 0.5
    layer.weight.weight_loader(layer.weight, w)
    if bias:
        layer.bias.weight_loader(layer.bias, torch.randn(layer.bias.shape))
    return layer, w.to(dtype), (layer.bias.detach().clone() if bias else None)


@needs_mkldnn
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_equals_f_linear(dtype, bias):
    layer, w, b = loaded(ReplicatedLinear, 96, 80, dtype=dtype, bias=bias)
    layer.process_weights_after_loading()
    assert layer.weight_packed.is_mkldnn and layer.weight_packed.dtype == dtype
    assert not layer.weight.is_mkldnn and torch.equal(layer.weight, w)  # the parameter stays plain
    for m in (1, 2, 16, 17, 64):
        x = torch.randn(m, 96, dtype=dtype)
        ref = F.linear(x.float(), w.float(), None if b is None else b.float())
        out = layer(x)  # [m, 80]
        assert out.dtype == dtype and out.shape == (m, 80)
        torch.testing.assert_close(out.float(), ref, **TOL[dtype])


@needs_mkldnn
def test_packed_row_parallel_and_qkv():
    row, w_row, _ = loaded(RowParallelLinear, 64, 48, dtype=torch.float32)
    qkv = QKVParallelLinear(48, 8, 4, 2, bias=True, params_dtype=torch.float32, prefix="qkv")
    w_qkv, b_qkv = torch.randn(64, 48), torch.randn(64)
    qkv.weight.weight_loader(qkv.weight, w_qkv)
    qkv.bias.weight_loader(qkv.bias, b_qkv)
    for layer in (row, qkv):
        layer.process_weights_after_loading()
    x = torch.randn(17, 64)
    torch.testing.assert_close(row(x), x @ w_row.T, **TOL[torch.float32])
    torch.testing.assert_close(qkv(x[:, :48]), x[:, :48] @ w_qkv.T + b_qkv, **TOL[torch.float32])


@needs_mkldnn
@pytest.mark.parametrize("tied", [False, True])
def test_packed_lm_head(tied):
    emb = VocabParallelEmbedding(100, 32, params_dtype=torch.bfloat16)
    head = ParallelLMHead(100, 32, params_dtype=torch.bfloat16)
    table = torch.randn(100, 32)
    emb.weight.weight_loader(emb.weight, table)
    if tied:
        head.tie_to(emb)
    else:
        head.weight.weight_loader(head.weight, table)
    head.process_weights_after_loading()
    assert head.weight_packed is not None and head.weight_packed.is_mkldnn
    assert not emb.weight.is_mkldnn and (head.weight is emb.weight) == tied
    hidden = emb(torch.tensor([3, 99, 0]))  # [3, 32]
    for rows in (hidden[:1], hidden):  # gemv, packed
        torch.testing.assert_close(head(rows).float(), rows.float() @ table.bfloat16().float().T,
                                   **TOL[torch.bfloat16])


@needs_mkldnn
def test_one_bf16_row_takes_aten_gemv_and_restores_the_mkldnn_flag(monkeypatch):
    layer, w, b = loaded(ReplicatedLinear, 64, 40, dtype=torch.bfloat16, bias=True)
    layer.process_weights_after_loading()
    calls = []
    monkeypatch.setattr(cpu_linear, "packed_linear", lambda *a: calls.append("packed") or F.linear(a[0], w, b))
    x = torch.randn(1, 64, dtype=torch.bfloat16)
    assert torch.equal(layer(x), F.linear(x, w, b)) and calls == []  # ATen's gemv, same float32 sums
    layer(torch.randn(2, 64, dtype=torch.bfloat16))
    assert calls == ["packed"]
    assert torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)  # a user's setting survives the call
    try:
        layer(x)
        assert not torch._C._get_mkldnn_enabled()
    finally:
        torch._C._set_mkldnn_enabled(True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fallback_when_packing_is_disabled(monkeypatch, dtype):
    monkeypatch.setenv("TRITIUM_CPU_PACK", "0")
    layer, w, b = loaded(ReplicatedLinear, 32, 24, dtype=dtype, bias=True)
    layer.process_weights_after_loading()
    assert layer.weight_packed is None
    head = ParallelLMHead(50, 32, params_dtype=dtype)
    head.weight.weight_loader(head.weight, torch.randn(50, 32))
    head.process_weights_after_loading()
    assert head.weight_packed is None
    for m in (1, 17):
        x = torch.randn(m, 32, dtype=dtype)
        assert torch.equal(layer(x), F.linear(x, w, b))
        assert torch.equal(head(x), F.linear(x, head.weight))


def test_can_pack_rules():
    assert not can_pack(torch.zeros(4, 4, dtype=torch.float16))  # no packed float16 path (slow on CPU)
    assert not can_pack(torch.zeros(4))  # not a matrix
