"""CPU linears (layers/cpu_linear.py) on any x86 CPU: every kernel choice is forced both ways and
checked against F.linear in float32, with the kernel that ran recorded.

The bf16 oneDNN copy needs native bf16 instructions: where the CPU has them both copies are
tested; where it lacks them the test asserts that they are reported missing and that the
dispatcher takes the float32 copy instead."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tritium.config import cpu_has_native_bf16
from tritium.layers import cpu_linear
from tritium.layers.cpu_linear import ATEN_BF16, PACKED, PACKED_FLOAT32, PLAIN
from tritium.layers.embedding import ParallelLMHead, VocabParallelEmbedding
from tritium.layers.linear import QKVParallelLinear, ReplicatedLinear, RowParallelLinear

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}
NATIVE_BF16 = cpu_has_native_bf16()


@pytest.fixture
def ran(monkeypatch):
    """The packed / gemv kernels that ran, in order (spies around the real kernels)."""
    calls: list[str] = []
    real_packed, real_gemv = cpu_linear.packed_linear, cpu_linear.aten_gemv
    monkeypatch.setattr(cpu_linear, "packed_linear", lambda x, w, b: calls.append("packed") or real_packed(x, w, b))
    monkeypatch.setattr(cpu_linear, "aten_gemv", lambda x, w, b: calls.append(ATEN_BF16) or real_gemv(x, w, b))
    return calls


@pytest.fixture(params=["native_bf16", "no_native_bf16"])
def bf16_kernels(request, monkeypatch):
    """Both sides of the bf16 packing choice. The native side is forced on only where the hardware
    has it; elsewhere it must be reported missing, and the float32 fallback is what runs."""
    if request.param == "no_native_bf16":
        monkeypatch.setattr(cpu_linear, "bf16_packing_supported", lambda: False)
        return False
    assert cpu_linear.bf16_packing_supported() == NATIVE_BF16
    return NATIVE_BF16


def loaded(layer_cls, *args, dtype, bias=False, **kw):
    layer = layer_cls(*args, bias=bias, params_dtype=dtype, **kw)
    w = torch.randn(layer.weight.shape) / layer.weight.shape[1] ** 0.5
    layer.weight.weight_loader(layer.weight, w)
    if bias:
        layer.bias.weight_loader(layer.bias, torch.randn(layer.bias.shape))
    return layer, w.to(dtype), (layer.bias.detach().clone() if bias else None)


def test_packing_is_available_on_this_build():
    # The fast paths below are real: the project's torch has oneDNN (CPU wheels always do).
    assert cpu_linear.packing_available()


@pytest.mark.parametrize("bias", [False, True])
def test_float32_weights_take_the_float32_copy(bias, ran):
    layer, w, b = loaded(ReplicatedLinear, 96, 80, dtype=torch.float32, bias=bias)
    layer.process_weights_after_loading()
    packed = layer.weight_packed
    assert packed.dtype == torch.float32 and not packed.is_made  # made when needed
    assert not layer.weight.is_mkldnn and torch.equal(layer.weight, w)  # the parameter stays plain
    for m, kernel in ((40, PLAIN), (1, PACKED), (2, PACKED), (17, PACKED), (40, PACKED)):
        x = torch.randn(m, 96)
        assert cpu_linear.kernel_for(x, packed) == kernel  # float32 has no gemv path
        ran.clear()
        out = layer(x)  # [m, 80]
        assert ran == (["packed"] if kernel == PACKED else [])
        assert out.shape == (m, 80) and out.dtype == torch.float32
        torch.testing.assert_close(out, F.linear(x, w, b), **TOL[torch.float32])
        assert packed.is_made == (kernel == PACKED)  # the first call made no copy
    assert packed.tensor.is_mkldnn


@pytest.mark.parametrize("bias", [False, True])
def test_bf16_weights_on_both_sides_of_native_bf16(bf16_kernels, bias, ran):
    layer, w, b = loaded(ReplicatedLinear, 96, 80, dtype=torch.bfloat16, bias=bias)
    layer.process_weights_after_loading()
    packed = layer.weight_packed
    assert packed.dtype == (torch.bfloat16 if bf16_kernels else torch.float32)
    assert layer.weight.dtype == torch.bfloat16 and torch.equal(layer.weight, w)
    aten_rows = 1 if bf16_kernels else cpu_linear.ATEN_BF16_MAX_ROWS_WITHOUT_NATIVE
    many = PACKED if bf16_kernels else PACKED_FLOAT32
    cases = [(1, ATEN_BF16), (40, PLAIN if bf16_kernels else cpu_linear.PLAIN_FLOAT32)]  # no copy yet
    cases += [(m, ATEN_BF16 if m <= aten_rows else many) for m in (1, 2, 3, 4, 16, 17, 40)]
    for m, expected in cases:
        x = torch.randn(m, 96, dtype=torch.bfloat16)
        assert cpu_linear.kernel_for(x, packed) == expected
        ran.clear()
        out = layer(x)
        assert ran == {ATEN_BF16: [ATEN_BF16], PACKED: ["packed"], PACKED_FLOAT32: ["packed"]}.get(expected, [])
        assert out.dtype == torch.bfloat16 and out.shape == (m, 80)
        ref = F.linear(x.float(), w.float(), None if b is None else b.float())
        torch.testing.assert_close(out.float(), ref, **TOL[torch.bfloat16])
        if expected in (PACKED_FLOAT32, cpu_linear.PLAIN_FLOAT32):  # float32 sums of the bf16 values,
            torch.testing.assert_close(out.float(), ref, atol=1e-6, rtol=2**-8)  # rounded once: one bf16 ulp
    assert packed.tensor.is_mkldnn and packed.tensor.dtype == packed.dtype


def test_packed_row_parallel_and_qkv():
    row, w_row, _ = loaded(RowParallelLinear, 64, 48, dtype=torch.float32)
    qkv = QKVParallelLinear(48, 8, 4, 2, bias=True, params_dtype=torch.float32, prefix="qkv")
    w_qkv, b_qkv = torch.randn(64, 48), torch.randn(64)
    qkv.weight.weight_loader(qkv.weight, w_qkv)
    qkv.bias.weight_loader(qkv.bias, b_qkv)
    for layer in (row, qkv):
        layer.process_weights_after_loading()
        assert layer.weight_packed is not None
    x = torch.randn(17, 64)
    torch.testing.assert_close(row(x), x @ w_row.T, **TOL[torch.float32])
    torch.testing.assert_close(qkv(x[:, :48]), x[:, :48] @ w_qkv.T + b_qkv, **TOL[torch.float32])


@pytest.mark.parametrize("tied", [False, True])
def test_packed_lm_head(bf16_kernels, tied, ran):
    emb = VocabParallelEmbedding(100, 32, params_dtype=torch.bfloat16)
    head = ParallelLMHead(100, 32, params_dtype=torch.bfloat16)
    table = torch.randn(100, 32)
    emb.weight.weight_loader(emb.weight, table)
    if tied:
        head.tie_to(emb)
    else:
        head.weight.weight_loader(head.weight, table)
    head.process_weights_after_loading()
    assert head.weight_packed.dtype == (torch.bfloat16 if bf16_kernels else torch.float32)
    assert not emb.weight.is_mkldnn and (head.weight is emb.weight) == tied
    hidden = emb(torch.tensor([3, 99, 0, 42, 7]))  # [5, 32]: more rows than the ATen bf16 path takes
    for rows, kernel in ((hidden[:1], ATEN_BF16), (hidden, None), (hidden, "packed")):  # None: first call, plain
        ran.clear()
        logits = head(rows)
        assert ran == ([kernel] if kernel else [])
        torch.testing.assert_close(logits.float(), rows.float() @ table.bfloat16().float().T,
                                   **TOL[torch.bfloat16])
    assert head.weight_packed.tensor.is_mkldnn


def test_one_bf16_row_takes_aten_gemv_and_restores_the_mkldnn_flag():
    layer, w, b = loaded(ReplicatedLinear, 64, 40, dtype=torch.bfloat16, bias=True)
    layer.process_weights_after_loading()
    x = torch.randn(1, 64, dtype=torch.bfloat16)
    torch._C._set_mkldnn_enabled(False)
    try:
        expected = F.linear(x, w, b)  # ATen's own gemv: same float32 sums
    finally:
        torch._C._set_mkldnn_enabled(True)
    assert torch.equal(layer(x), expected)
    assert torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)  # a user's setting survives the call
    try:
        layer(x)
        assert not torch._C._get_mkldnn_enabled()
    finally:
        torch._C._set_mkldnn_enabled(True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fallback_when_packing_is_disabled(monkeypatch, dtype, ran):
    monkeypatch.setenv("TRITIUM_CPU_PACK", "0")
    assert not cpu_linear.packing_available()
    layer, w, b = loaded(ReplicatedLinear, 32, 24, dtype=dtype, bias=True)
    layer.process_weights_after_loading()
    assert layer.weight_packed is None
    head = ParallelLMHead(50, 32, params_dtype=dtype)
    head.weight.weight_loader(head.weight, torch.randn(50, 32))
    head.process_weights_after_loading()
    assert head.weight_packed is None
    for m in (1, 17):
        x = torch.randn(m, 32, dtype=dtype)
        assert cpu_linear.kernel_for(x, None) == PLAIN
        ran.clear()
        assert torch.equal(layer(x), F.linear(x, w, b))
        assert torch.equal(head(x), F.linear(x, head.weight))
        assert ran == []  # neither packed nor gemv: F.linear


def test_packed_dtype_rules(monkeypatch):
    assert cpu_linear.packed_dtype(torch.zeros(4, 4, dtype=torch.float16)) is None  # no float16 path
    assert cpu_linear.packed_dtype(torch.zeros(4)) is None  # not a matrix
    assert cpu_linear.packed_dtype(torch.zeros(4, 4)) == torch.float32
    monkeypatch.setattr(cpu_linear, "bf16_packing_supported", lambda: False)
    assert cpu_linear.packed_dtype(torch.zeros(4, 4, dtype=torch.bfloat16)) == torch.float32


def test_an_avx2_process_on_any_cpu_reports_no_native_bf16_and_takes_the_float32_copy():
    """ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA make this process an AVX2 one whatever the CPU:
    native bf16 must be reported missing (torch.cpu's own check still says yes on an AVX512_BF16
    CPU), 'auto' must still pick bfloat16, and many bf16 rows must take the float32 copy."""
    code = (
        "import torch\n"
        "from tritium.config import cpu_capability, cpu_has_native_bf16, resolve_dtype\n"
        "from tritium.layers import cpu_linear\n"
        "w = torch.randn(40, 64).bfloat16(); p = cpu_linear.pack_weight(w)\n"
        "x = torch.randn(5, 64).bfloat16(); ref = x.float() @ w.float().T\n"
        "close = lambda y: bool(((y.float() - ref).abs() <= ref.abs() * 2**-8 + 1e-6).all())  # one bf16 ulp\n"
        "first = cpu_linear.linear(x, w, p, None)  # the weight's first call: no copy yet\n"
        "kernel = cpu_linear.kernel_for(x, p)\n"
        "print(cpu_capability(), cpu_has_native_bf16(), resolve_dtype('auto', None, torch.device('cpu')),\n"
        "      p.dtype, kernel, close(first) and close(cpu_linear.linear(x, w, p, None)))\n")
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["AVX2", "False", "torch.bfloat16", "torch.float32", PACKED_FLOAT32, "True"]
