"""Token bitmask on the logits, in torch on their device (no host sync, no compile step)."""
from __future__ import annotations

import torch


def bitmask_words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def apply_token_bitmask_(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """In place: logits[i, t] = -inf where bit t of bitmask row i is 0.

    logits [N, V] float; bitmask [N, ceil(V / 32)] int32, bit t % 32 of word t // 32 (llguidance's layout).
    """
    num_rows, vocab = logits.shape
    bits = torch.arange(32, device=bitmask.device, dtype=torch.int32)  # [32]
    allowed = ((bitmask.unsqueeze(-1) >> bits) & 1).bool()  # [N, W, 32]
    allowed = allowed.view(num_rows, -1)[:, :vocab]  # [N, V]
    return logits.masked_fill_(~allowed, float("-inf"))
