"""Run a tritium model on one request without the engine: paged KV cache + an attention backend
(torch reference by default).

    harness = SingleRequestHarness(model, model_config)
    logits = harness.step(prompt_ids)      # prefill: [len(prompt), vocab] float32
    logits = harness.step([next_id])       # decode one token against the cached prompt
    logits = forward_logits(model, model_config, ids)   # one fresh full pass

Layout (one request, block table = blocks 0, 1, 2, ... in order):
    positions      0 .. block_size-1 | block_size .. 2*block_size-1 | ...
    cache block    0                 | 1                            | ...
Each step writes its tokens at slots num_cached .. num_cached + n - 1 and attends over all of them.
"""
from __future__ import annotations

from typing import Sequence

import torch

from tritium.attention.backend import AttentionBackend, AttentionMetadata, ForwardContext, forward_context
from tritium.attention.torch_backend import TorchAttentionBackend
from tritium.config import ModelConfig


def single_request_metadata(num_cached_tokens: int, num_new_tokens: int, block_table: torch.Tensor,
                            device: torch.device) -> AttentionMetadata:
    seq_len = num_cached_tokens + num_new_tokens
    return AttentionMetadata(
        num_actual_tokens=num_new_tokens,
        query_start_loc=torch.tensor([0, num_new_tokens], dtype=torch.int32, device=device),
        seq_lens=torch.tensor([seq_len], dtype=torch.int32, device=device),
        block_tables=block_table.to(device=device, dtype=torch.int32)[None, :],  # [1, num_blocks]
        slot_mapping=torch.arange(num_cached_tokens, seq_len, dtype=torch.int64, device=device),
        max_query_len=num_new_tokens,
        max_seq_len=seq_len,
        query_start_loc_cpu=[0, num_new_tokens],
        seq_lens_cpu=[seq_len],
    )


def make_kv_caches(config: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype,
                   device: torch.device) -> list[torch.Tensor]:
    # one [2, num_blocks, block_size, num_kv_heads, head_dim] tensor per layer (TP size 1)
    shape = (2, num_blocks, block_size, config.num_key_value_heads, config.head_dim)
    return [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]


class SingleRequestHarness:
    def __init__(self, model: torch.nn.Module, config: ModelConfig, max_tokens: int = 256, block_size: int = 16,
                 backend: AttentionBackend | None = None):
        self.model, self.config, self.block_size = model, config, block_size
        self.device = next(model.parameters()).device
        num_blocks = -(-max_tokens // block_size)
        self.block_table = torch.arange(num_blocks)
        kv_dtype = next((m.kv_cache_dtype for m in model.modules() if getattr(m, "kv_cache_dtype", None) is not None),
                        config.dtype)  # a quantized KV cache (FP8 / INT8) or the model dtype
        self.kv_caches = make_kv_caches(config, num_blocks, block_size, kv_dtype, self.device)
        self.backend = backend or TorchAttentionBackend()
        self.num_cached_tokens = 0

    @torch.no_grad()
    def step(self, token_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Run the next tokens of the request; returns their logits [n, vocab] float32."""
        ids = torch.as_tensor(token_ids, dtype=torch.int64, device=self.device).reshape(-1)  # [n]
        n = ids.shape[0]
        positions = torch.arange(self.num_cached_tokens, self.num_cached_tokens + n, device=self.device)
        meta = single_request_metadata(self.num_cached_tokens, n, self.block_table, self.device)
        with forward_context(ForwardContext(meta, self.kv_caches, self.backend)):
            hidden = self.model(ids, positions)  # [n, hidden]
        self.num_cached_tokens += n
        return self.model.compute_logits(hidden)


def forward_logits(model: torch.nn.Module, config: ModelConfig, token_ids: Sequence[int] | torch.Tensor,
                   block_size: int = 16, backend: AttentionBackend | None = None) -> torch.Tensor:
    """Logits [T, vocab] of one full prefill pass over token_ids."""
    ids = torch.as_tensor(token_ids).reshape(-1)
    return SingleRequestHarness(model, config, max_tokens=len(ids), block_size=block_size, backend=backend).step(ids)


def greedy_decode(model: torch.nn.Module, config: ModelConfig, prompt_ids: Sequence[int], max_new_tokens: int,
                  max_tokens: int = 512, backend: AttentionBackend | None = None) -> list[int]:
    """Greedy continuation through the KV cache: one prefill, then one-token decode steps."""
    harness = SingleRequestHarness(model, config, max_tokens=max_tokens, backend=backend)
    logits = harness.step(list(prompt_ids))
    out: list[int] = []
    for _ in range(max_new_tokens):
        out.append(int(logits[-1].argmax()))
        if len(out) < max_new_tokens:
            logits = harness.step([out[-1]])
    return out
