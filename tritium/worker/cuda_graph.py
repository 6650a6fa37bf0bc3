"""CUDA graphs for decode steps: the whole forward pass plus the LM head, replayed in one launch.

A decode step of R requests (one token each) is padded up to the next captured batch size B
(with padding off, only a step of exactly a captured size replays a graph).
Each size is captured once at start (largest first, all sharing one memory pool) over static
buffers; a replay copies the step's inputs into the first R rows of those buffers and pads the
rest with rows that write no KV (slot -1) and attend over nothing (length 0). Lengths and block
tables are read on the device, so one graph serves every context length.

Steps with prompt tokens have graphs of their own (prefill_graph.py); batches above the
largest size run eagerly.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Optional

import torch
from torch import nn

from tritium.attention.backend import AttentionBackend, AttentionMetadata, ForwardContext, forward_context
from tritium.worker.input_batch import StepInputs

logger = logging.getLogger(__name__)


def capture_sizes(max_batch_size: int) -> list[int]:
    """Batch sizes to capture up to max_batch_size (itself included): 1, 2, 4, 8, then every 16 up
    to 256, every 32 up to 512, every 64 up to 1024, every 128 above (an eager 8B decode step of
    1024 requests is host-bound: ~4x a graph's time on an H200)."""
    sizes = ([1, 2, 4, 8] + list(range(16, 257, 16)) + list(range(288, 513, 32)) + list(range(576, 1025, 64))
             + list(range(1152, max(max_batch_size, 1152) + 1, 128)))
    out = [s for s in sizes if s < max_batch_size] + [max_batch_size]
    return sorted(set(out))


def decode_graph_sizes(max_batch_size: int, config=None) -> tuple[list[int], bool]:
    """(sizes to capture, padding) for an engine of max_batch_size: tritium's sizes, padded, without
    a config.CudaGraphConfig; else the config's batch_sizes (or tritium's sizes up to its
    max_batch_size, 128 by default), without those above the engine's max_batch_size."""
    if config is None:
        return capture_sizes(max_batch_size), True
    if config.batch_sizes:
        sizes = sorted({b for b in config.batch_sizes if b <= max_batch_size})
        if not sizes:
            raise ValueError(f"cuda_graph_config.batch_sizes {config.batch_sizes} are all above max_batch_size "
                             f"({max_batch_size}): no decode step could use them")
    else:
        sizes = capture_sizes(min(config.max_batch_size or 128, max_batch_size))
    return sizes, config.enable_padding


def warm_up_key(rows: int, kv_splits: int = 0) -> tuple:
    """What can make a graph's first run do work an earlier size's run did not: Triton's
    specialisation of a row count (1, a multiple of 16, other), the row counts where linear
    layers change kernels (streaming GEMMs up to 16 rows, weight-only ones up to 64, row-wise FP8
    from 128: each timed or initialised at first use) and the decode attention's KV split count
    (a constexpr). A size whose key an earlier size has warmed up is captured without an eager
    run of its own."""
    from tritium.kernels import STREAMING_GEMM_MAX_ROWS
    from tritium.quantization.fp8 import GEMV_MAX_ROWS, ROWWISE_MIN_ROWS
    from tritium.quantization.weight_only import WEIGHT_ONLY_KERNEL_MAX_ROWS

    return (rows == 1, rows % 16 == 0, rows <= STREAMING_GEMM_MAX_ROWS, rows <= GEMV_MAX_ROWS,
            rows <= WEIGHT_ONLY_KERNEL_MAX_ROWS, rows >= ROWWISE_MIN_ROWS, kv_splits)


def sizes_to_warm_up(sizes: list[int], key: Callable[[int], tuple]) -> set[int]:
    """Of sizes captured largest first, those whose warm_up_key no larger size has; every size
    with TRITIUM_GRAPH_WARMUP=all (an eager run before every capture, the slower start of before)."""
    if os.environ.get("TRITIUM_GRAPH_WARMUP", "") == "all":
        return set(sizes)
    seen, warm = set(), set()
    for size in sorted(sizes, reverse=True):
        k = key(size)
        if k not in seen:
            seen.add(k)
            warm.add(size)
    return warm


def capture_graph(forward: Callable[[], None], pool, device: torch.device,
                  warm_up: bool = True) -> torch.cuda.CUDAGraph:
    """forward() run once eagerly when warm_up (it compiles every Triton specialisation and makes
    every first-use choice outside the capture), then captured into a graph drawing on memory
    pool `pool`. A capture without a warm-up that fails is warmed up and captured again."""
    if warm_up:
        forward()
        torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph, pool=pool):
            forward()
    except RuntimeError as e:
        if warm_up:
            raise
        logger.warning("CUDA graph capture without a warm-up run failed (%s); warming up and capturing again", e)
        return capture_graph(forward, pool, device, warm_up=True)
    return graph


class DecodeGraphs:
    def __init__(self, model: nn.Module, kv_caches: list[torch.Tensor], backend: AttentionBackend,
                 sizes: list[int], max_blocks_per_seq: int, max_model_len: int, device: torch.device,
                 padding: bool = True):
        self.model, self.kv_caches, self.backend, self.device = model, kv_caches, backend, device
        self.sizes = sizes  # ascending
        self.padding = padding
        top = self.sizes[-1]
        self.num_kv_heads = kv_caches[0].shape[3]
        self.max_model_len = max_model_len
        # Static inputs, [top] or [top, max_blocks]: replays read them, steps write their prefix.
        self.input_ids = torch.zeros(top, dtype=torch.long, device=device)
        self.positions = torch.zeros(top, dtype=torch.long, device=device)
        self.slot_mapping = torch.full((top,), -1, dtype=torch.long, device=device)
        self.seq_lens = torch.zeros(top, dtype=torch.int32, device=device)
        self.query_start_loc = torch.arange(top + 1, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros(top, max_blocks_per_seq, dtype=torch.int32, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        # Every graph writes its logits into the first rows of one buffer, so the pool holds one
        # graph's temporaries (they are reused across graphs), not every size's outputs.
        self.logits = torch.empty(top, model.config.vocab_size, dtype=torch.float32, device=device)
        self.metas: dict[int, AttentionMetadata] = {}
        self.pool_bytes = 0  # what capturing added to the (possibly shared) pool
        self._rows_written = 0  # rows [0, this) may hold an earlier step's requests

    def bucket(self, num_reqs: int) -> Optional[int]:
        if not self.padding:
            return num_reqs if num_reqs in self.sizes else None
        for size in self.sizes:
            if size >= num_reqs:
                return size
        return None

    def _metadata(self, size: int) -> AttentionMetadata:
        from tritium.kernels.decode_attention import num_kv_splits  # Triton: imported on GPUs only

        splits = num_kv_splits(size, self.num_kv_heads, self.max_model_len, getattr(self.backend, "num_sms", 132))
        meta = AttentionMetadata(
            num_actual_tokens=size, query_start_loc=self.query_start_loc[:size + 1], seq_lens=self.seq_lens[:size],
            block_tables=self.block_tables[:size], slot_mapping=self.slot_mapping[:size], max_query_len=1,
            max_seq_len=self.max_model_len, query_start_loc_cpu=list(range(size + 1)), seq_lens_cpu=[1] * size,
            num_kv_splits=splits)
        if splits > 1:  # split-KV scratch, allocated once outside the graph
            from tritium.kernels.decode_attention import decode_workspace  # Triton: GPU only

            meta.backend_cache["decode_workspace"] = decode_workspace(
                size, self.model.config.num_attention_heads, self.kv_caches[0].shape[4], splits, self.device)
        return meta

    def _forward(self, size: int) -> None:
        ctx = ForwardContext(attn_metadata=self.metas[size], kv_caches=self.kv_caches, backend=self.backend)
        with forward_context(ctx):
            hidden = self.model(self.input_ids[:size], self.positions[:size])  # [B, hidden]
        self.model.compute_logits(hidden, out=self.logits[:size])  # [B, vocab] float32

    @torch.inference_mode()
    def capture(self, pool=None) -> None:
        """pool: a graph memory pool to share (torch.cuda.graph_pool_handle()); None: a new one."""
        start = time.perf_counter()
        before = torch.cuda.memory_allocated(self.device) - self.logits.numel() * self.logits.element_size()
        pool = pool if pool is not None else torch.cuda.graph_pool_handle()
        self.seq_lens.fill_(1)  # short lengths keep the warm-up cheap; the KV slots stay unwritten (-1)
        self.metas = {size: self._metadata(size) for size in self.sizes}
        warm = sizes_to_warm_up(self.sizes, lambda size: warm_up_key(size, self.metas[size].num_kv_splits))
        for size in reversed(self.sizes):  # largest first: later graphs reuse its pool
            self.graphs[size] = capture_graph(lambda: self._forward(size), pool, self.device, warm_up=size in warm)
        self.seq_lens.zero_()
        torch.cuda.synchronize(self.device)
        self.pool_bytes = torch.cuda.memory_allocated(self.device) - before
        logger.info("captured %d decode CUDA graphs (batch %d..%d; %d warm-up runs) in %.1f s, %.2f GiB more in "
                    "their pool", len(self.sizes), self.sizes[0], self.sizes[-1], len(warm), time.perf_counter() - start,
                    self.pool_bytes / 2**30)

    def run(self, inputs: StepInputs) -> torch.Tensor:
        """Replay the graph for a pure-decode step; returns logits [R, vocab] float32 (a view of
        the graph's output buffer, valid until the next replay)."""
        meta = inputs.attn_metadata
        num_reqs = meta.num_actual_tokens
        size = self.bucket(num_reqs)
        num_blocks = meta.block_tables.shape[1]
        self.input_ids[:num_reqs].copy_(inputs.input_ids, non_blocking=True)
        self.positions[:num_reqs].copy_(inputs.positions, non_blocking=True)
        self.slot_mapping[:num_reqs].copy_(meta.slot_mapping, non_blocking=True)
        self.seq_lens[:num_reqs].copy_(meta.seq_lens, non_blocking=True)
        self.block_tables[:num_reqs, :num_blocks].copy_(meta.block_tables, non_blocking=True)
        stale = min(size, self._rows_written)
        if stale > num_reqs:  # rows an earlier step filled become padding: no KV write, nothing to attend
            self.slot_mapping[num_reqs:stale].fill_(-1)
            self.seq_lens[num_reqs:stale].zero_()
        # Rows beyond this graph's size keep their old contents until a larger step pads them.
        self._rows_written = max(num_reqs, self._rows_written if self._rows_written > size else 0)
        self.graphs[size].replay()
        return self.logits[:num_reqs]
