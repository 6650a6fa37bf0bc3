"""Attention backend interface, the per-step metadata it owns, and the scoped forward context.

The model runner builds one `AttentionMetadata` per step and enters
`with forward_context(ForwardContext(...)):` around the model call; attention layers read it
with `get_forward_context()`. Model code never sees block tables or sequence offsets.

Batch layout: the step's tokens of all requests are flattened, request after request:
    tokens:           [r0 t0 t1 t2 | r1 t0 | r2 t0 t1 ]     num_actual_tokens = 6
    query_start_loc:  [0, 3, 4, 6]
    seq_lens:         context (already in the cache) + this step's tokens, per request
KV cache of one layer: [2, num_blocks, block_size, num_kv_heads, head_dim] (k at 0, v at 1);
token position p of a request lives in block block_tables[r, p // block_size], offset p % block_size,
and slot_mapping gives each new token's flat slot (block_id * block_size + offset).
"""
from __future__ import annotations

import contextlib
import contextvars
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch


@dataclass
class AttentionMetadata:
    num_actual_tokens: int
    query_start_loc: torch.Tensor  # [num_reqs + 1] int32, on the model's device
    seq_lens: torch.Tensor  # [num_reqs] int32
    block_tables: torch.Tensor  # [num_reqs, max_blocks_per_req] int32
    slot_mapping: torch.Tensor  # [num_actual_tokens] int64
    max_query_len: int
    max_seq_len: int
    # Host copies for backends that loop or branch in Python.
    query_start_loc_cpu: list[int]
    seq_lens_cpu: list[int]
    # Decode-only steps: KV splits per sequence (None: the backend chooses from the lengths; a
    # CUDA graph fixes it per captured batch size).
    num_kv_splits: Optional[int] = None
    # Leading requests with one query token each (the model runner puts them first in a step
    # with prompt tokens): a backend may run them through its decode path.
    num_decodes: int = 0
    # What a backend derives from this step's metadata once and reuses in every layer
    # (gather indices, masks), keyed by the backend.
    backend_cache: dict[str, Any] = field(default_factory=dict)

    @property
    def num_reqs(self) -> int:
        return len(self.seq_lens_cpu)

    @property
    def is_pure_decode(self) -> bool:
        return self.max_query_len == 1


class AttentionBackend(ABC):
    """Computes paged attention for one layer: stores this step's k/v, then attends."""

    name: str = "abstract"
    # Whether the model should hand over q and k un-rotated with the step's cos/sin rows, for
    # the backend to apply RoPE fused with its cache write.
    fuses_rope: bool = False

    @abstractmethod
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor,
                meta: AttentionMetadata, scale: float, cos_sin: Optional[torch.Tensor] = None,
                kv_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        """q: [num_tokens, num_heads, head_dim]; k, v: [num_tokens, num_kv_heads, head_dim];
        kv_cache: [2, num_blocks, block_size, num_kv_heads, head_dim]; cos_sin: None when q and
        k are already rotated, else the tokens' RoPE rows [num_tokens, head_dim] float32
        (cos | sin halves, neox layout) to rotate them with (q and k may be rotated in place);
        kv_scale: for an FP8 / INT8 cache, the layer's dequant multipliers [2, num_kv_heads]
        float32 (k, v): values are stored divided by them and multiplied back when read.
        Returns [num_tokens, num_heads, head_dim]: causal attention of each token over its
        request's cached context and the request's tokens up to and including itself."""


@dataclass
class ForwardContext:
    attn_metadata: AttentionMetadata
    kv_caches: list[torch.Tensor]  # one per layer
    backend: AttentionBackend


_current: contextvars.ContextVar[Optional[ForwardContext]] = contextvars.ContextVar(
    "tritium_forward_context", default=None)


@contextlib.contextmanager
def forward_context(ctx: ForwardContext) -> Iterator[ForwardContext]:
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def get_forward_context() -> ForwardContext:
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("attention ran outside `with forward_context(...)`: the model runner sets it per step")
    return ctx
