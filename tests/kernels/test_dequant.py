"""One-pass weight dequantization equals the torch references bit for bit: int4 groups
(quant_utils.dequantize_int4: several group sizes, K padded to the group) and int8 rows (the
reference multiplies in the model dtype)."""
import pytest
import torch

from tritium.kernels import dequant, interpreting
from tritium.quantization.quant_utils import dequantize_int4, quantize_int4, quantize_int8_per_row


def rounded(x32: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float32 -> dtype as the kernel rounds: to nearest even on a GPU; Triton's CPU interpreter
    truncates float32 -> bfloat16 (its float16 casts round)."""
    if interpreting() and dtype == torch.bfloat16:
        return (x32.view(torch.int32) & ~0xFFFF).view(torch.float32).to(dtype)  # exact: the low bits are zero
    return x32.to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("k, group_size", [(256, 128), (200, 64), (96, 32)])  # 200: the last group padded
def test_int4_matches_the_reference(device, dtype, k, group_size):
    gen = torch.Generator().manual_seed(k)
    w = torch.randn(24, k, generator=gen)
    packed, scale, zero = quantize_int4(w, group_size, scale_dtype=dtype)
    want = rounded(dequantize_int4(packed, scale, zero, group_size, k, torch.float32), dtype)
    got = dequant.dequantize_int4(packed.to(device), scale.to(device), zero.to(device), group_size, k, dtype)
    assert got.shape == (24, k) and got.dtype == dtype
    assert torch.equal(got.cpu(), want)


def test_int4_many_groups_span_several_programs(device):
    """More groups in a row than one program writes (4096 weights)."""
    w = torch.randn(3, 32 * 200, generator=torch.Generator().manual_seed(1))
    packed, scale, zero = quantize_int4(w, 32, scale_dtype=torch.bfloat16)
    want = rounded(dequantize_int4(packed, scale, zero, 32, w.shape[1], torch.float32), torch.bfloat16)
    got = dequant.dequantize_int4(packed.to(device), scale.to(device), zero.to(device), 32, w.shape[1],
                                  torch.bfloat16)
    assert torch.equal(got.cpu(), want)


def test_int4_rejects_a_group_size_it_cannot_split():
    with pytest.raises(ValueError, match="power-of-two group size"):
        dequant.dequantize_int4(torch.zeros(1, 24, dtype=torch.uint8), torch.ones(1, 1), torch.zeros(1, 1), 48, 48,
                                torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_int8_rows_match_the_reference(device, dtype):
    w = torch.randn(20, 5000, generator=torch.Generator().manual_seed(2))  # K past one program
    q, scale = quantize_int8_per_row(w)
    # the reference, q.to(dtype) * scale.to(dtype)[:, None], computes each product in float32 and rounds it
    want = rounded(q.float() * rounded(scale, dtype).float()[:, None], dtype)
    if not interpreting():
        assert torch.equal(want, q.to(dtype) * scale.to(dtype)[:, None])
    got = dequant.dequantize_int8_rows(q.to(device), scale.to(device), dtype)
    assert got.dtype == dtype and torch.equal(got.cpu(), want)
