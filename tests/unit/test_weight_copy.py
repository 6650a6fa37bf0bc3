"""Weights copied onto a device in row slices on several threads arrive whole and exact."""
import torch

from tritium.loader import model_loader


def test_copy_to_device_in_slices_is_exact(monkeypatch):
    monkeypatch.setattr(model_loader, "COPY_PIECE_BYTES", 1000)  # force many slices per tensor
    g = torch.Generator().manual_seed(0)
    sources = [torch.randn(257, 33, generator=g).to(torch.bfloat16),  # rows not a multiple of the slice
               torch.randint(0, 255, (5, 4096), generator=g, dtype=torch.uint8),  # one row above the slice size
               torch.randn(7, generator=g),
               torch.tensor(3.5)]  # 0-d (a per-tensor scale)
    targets = [torch.full_like(s, 0) for s in sources]
    model_loader._copy_to_device(list(zip(targets, sources)))
    for dst, src in zip(targets, sources):
        assert torch.equal(dst, src)
