"""One-pass activation quantization equals the torch references value for value: FP8 e4m3
(quant_utils.quantize_fp8) and int8 (quantize_int8), per-tensor and per-row scales, saturation,
bfloat16 and float32 inputs; row scales equal amax / qmax."""
import pytest
import torch

from tritium.kernels.act_quant import quantize_rows, row_fp8_scales, row_scales
from tritium.quantization.quant_utils import FP8_MAX, INT8_MAX, fp8_scale, quantize_fp8, quantize_int8

REFERENCE = {torch.float8_e4m3fn: (quantize_fp8, FP8_MAX), torch.int8: (quantize_int8, INT8_MAX)}


@pytest.mark.parametrize("out_dtype", [torch.float8_e4m3fn, torch.int8])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("per_row", [False, True])
def test_matches_the_torch_quantization(device, out_dtype, dtype, per_row):
    reference, qmax = REFERENCE[out_dtype]
    gen = torch.Generator().manual_seed(4)
    x = (torch.randn(5, 1500, generator=gen) * torch.logspace(-3, 2, 1500)).to(dtype).to(device)  # K past one block
    if per_row:
        scale = (x.float().abs().amax(dim=1, keepdim=True) / qmax).clamp(min=1e-12)  # [M, 1]
    else:
        scale = (x.float().abs().amax() / qmax).reshape(1) * 0.5  # half the range: the largest values saturate
    got = quantize_rows(x, scale, out_dtype)
    want = reference(x, scale)
    assert got.dtype == out_dtype and got.shape == x.shape
    # equal values (the CPU interpreter's FP8 rounding emulation gives +0 for tiny negatives where a GPU gives -0)
    assert torch.equal(got.float().cpu(), want.float().cpu())
    if not per_row:
        assert (got.float().abs() == qmax).any()  # saturated, not overflowed


def test_row_scales(device):
    x = torch.randn(3, 1500, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    x[1] = 0
    torch.testing.assert_close(row_fp8_scales(x.to(device)).cpu(), fp8_scale(x.float().abs().amax(dim=1)), rtol=0, atol=0)
    want = (x.float().abs().amax(dim=1) / INT8_MAX).clamp(min=1e-12)
    torch.testing.assert_close(row_scales(x.to(device), INT8_MAX).cpu(), want, rtol=0, atol=0)
