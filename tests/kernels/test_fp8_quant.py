"""The one-pass FP8 activation quantization equals quant_utils.quantize_fp8 value for value (per-tensor
and per-row scales, saturation, bfloat16 and float32 inputs)."""
import pytest
import torch

from tritium.kernels.fp8_quant import quantize_fp8_rows
from tritium.quantization.quant_utils import fp8_scale, quantize_fp8


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("per_row", [False, True])
def test_matches_the_torch_quantization(device, dtype, per_row):
    gen = torch.Generator().manual_seed(4)
    x = (torch.randn(5, 1500, generator=gen) * torch.logspace(-3, 2, 1500)).to(dtype).to(device)  # K past one block
    if per_row:
        scale = fp8_scale(x.abs().amax(dim=1, keepdim=True))  # [M, 1]
    else:
        scale = fp8_scale(x.abs().amax()).reshape(1) * 0.5  # half the range: the largest values saturate
    got = quantize_fp8_rows(x, scale)
    want = quantize_fp8(x, scale)
    assert got.dtype == torch.float8_e4m3fn and got.shape == x.shape
    # equal values (the CPU interpreter's rounding emulation gives +0 for tiny negatives where a GPU gives -0)
    assert torch.equal(got.float().cpu(), want.float().cpu())
    if not per_row:
        assert (got.float().abs() == 448).any()  # saturated, not overflowed to NaN
