"""CUDA graphs for steps that hold prompt tokens (a prefill, a prefill chunk, either mixed with
decodes): the forward pass and the sampling rows' LM head, replayed in one launch.

An eager step of an 8B model launches ~300 kernels; at a few hundred tokens the GPU finishes them
faster than Python issues them (a 467-token prefill on an H200: 27.5 ms of wall time for 11.3 ms
of kernels), which is most of a lone request's time to first token. So a step of up to
`max_tokens` tokens from up to `max_reqs` requests is padded to the next captured token count
and replayed. Padding tokens write no KV (slot -1) and belong to no request: the attention
kernel's grid covers `size` query tokens of `max_reqs` requests and requests past the step's
count have no query tokens (their programs exit at once). Padding rows carry garbage through the
row-wise layers and are never read. Lengths, offsets and block tables are read on the device,
so one graph serves every mix of prompt and context lengths.

Steps that ask for prompt logprobs or context logits, or are larger, run eagerly.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Optional

import torch
from torch import nn

from tritium.attention.backend import AttentionBackend, AttentionMetadata, ForwardContext, forward_context
from tritium.worker.cuda_graph import capture_graph, sizes_to_warm_up, warm_up_key
from tritium.worker.input_batch import StepInputs

logger = logging.getLogger(__name__)

# Token counts captured; past 256 the steps are 1.5x apart at most, so padding costs at most a
# third of a step's GPU time while each extra graph costs start-up time.
_TOKEN_SIZES = (16, 32, 64, 128, 256, 384, 512, 768, 1024)
MAX_REQS = 32  # requests per step (the attention grid has this many rows, most exit at once)


def prefill_graph_sizes(max_num_tokens: int, max_model_len: int) -> list[int]:
    """Token counts to capture for an engine: those up to its step and sequence limits (none when
    TRITIUM_PREFILL_GRAPHS=0)."""
    if os.environ.get("TRITIUM_PREFILL_GRAPHS", "1") == "0":
        return []
    top = min(max_num_tokens, max_model_len)
    return [s for s in _TOKEN_SIZES if s <= top]


class PrefillGraphs:
    def __init__(self, model: nn.Module, kv_caches: list[torch.Tensor], backend: AttentionBackend,
                 sizes: list[int], max_reqs: int, max_blocks_per_seq: int, max_model_len: int,
                 device: torch.device):
        self.model, self.kv_caches, self.backend, self.device = model, kv_caches, backend, device
        self.sizes = sizes  # ascending token counts
        self.max_reqs = max_reqs
        self.max_model_len = max_model_len
        top, reqs = sizes[-1], max_reqs
        # Static inputs: replays read them, each step writes its prefix (and resets what padding needs).
        self.input_ids = torch.zeros(top, dtype=torch.long, device=device)  # [T]
        self.positions = torch.zeros(top, dtype=torch.long, device=device)  # [T]
        self.slot_mapping = torch.full((top,), -1, dtype=torch.long, device=device)  # [T]
        self.query_start_loc = torch.zeros(reqs + 1, dtype=torch.int32, device=device)  # [S + 1]
        self.seq_lens = torch.zeros(reqs, dtype=torch.int32, device=device)  # [S]
        self.block_tables = torch.zeros(reqs, max_blocks_per_seq, dtype=torch.int32, device=device)  # [S, B]
        self.logits_indices = torch.zeros(reqs, dtype=torch.long, device=device)  # [S] rows that sample
        self.logits = torch.empty(reqs, model.config.vocab_size, dtype=torch.float32, device=device)  # [S, V]
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.metas: dict[int, AttentionMetadata] = {}

    def bucket(self, inputs: StepInputs) -> Optional[int]:
        """The captured token count this step pads to, or None (it runs eagerly)."""
        meta = inputs.attn_metadata
        if meta.num_reqs > self.max_reqs or meta.is_pure_decode:
            return None
        for size in self.sizes:
            if size >= meta.num_actual_tokens:
                return size
        return None

    def _metadata(self, size: int) -> AttentionMetadata:
        # max_query_len = size: the prefill kernel's grid covers every token a request could have
        return AttentionMetadata(
            num_actual_tokens=size, query_start_loc=self.query_start_loc, seq_lens=self.seq_lens,
            block_tables=self.block_tables, slot_mapping=self.slot_mapping[:size], max_query_len=size,
            max_seq_len=self.max_model_len, query_start_loc_cpu=[0] * (self.max_reqs + 1),
            seq_lens_cpu=[0] * self.max_reqs)

    def _forward(self, size: int) -> None:
        ctx = ForwardContext(attn_metadata=self.metas[size], kv_caches=self.kv_caches, backend=self.backend)
        with forward_context(ctx):
            hidden = self.model(self.input_ids[:size], self.positions[:size])  # [size, H]
        self.model.compute_logits(hidden.index_select(0, self.logits_indices), out=self.logits)  # [S, V]

    @torch.inference_mode()
    def capture(self, pool) -> None:
        start = time.perf_counter()
        # A warm-up shape: one request of `size` tokens whose KV writes are all skipped (slot -1)
        self.seq_lens.zero_()
        self.slot_mapping.fill_(-1)
        warm = sizes_to_warm_up(self.sizes, warm_up_key)
        for size in reversed(self.sizes):  # largest first: the smaller graphs reuse its memory
            self.query_start_loc.fill_(size)
            self.query_start_loc[0] = 0
            self.seq_lens[0] = size
            self.metas[size] = self._metadata(size)
            self.graphs[size] = capture_graph(lambda: self._forward(size), pool, self.device, warm_up=size in warm)
        self.seq_lens.zero_()
        self.query_start_loc.zero_()
        torch.cuda.synchronize(self.device)
        logger.info("captured %d prefill CUDA graphs (%d..%d tokens, up to %d requests; %d warm-up runs) in %.1f s",
                    len(self.sizes), self.sizes[0], self.sizes[-1], self.max_reqs, len(warm), time.perf_counter() - start)

    def run(self, inputs: StepInputs, size: int) -> torch.Tensor:
        """Replay the graph of `size` tokens for this step; returns the sampling rows' logits
        [N, vocab] float32 (a view of the graph's output buffer, valid until the next replay)."""
        meta = inputs.attn_metadata
        tokens, reqs, rows = meta.num_actual_tokens, meta.num_reqs, inputs.logits_indices.shape[0]
        num_blocks = meta.block_tables.shape[1]
        self.input_ids[:tokens].copy_(inputs.input_ids, non_blocking=True)
        self.positions[:tokens].copy_(inputs.positions, non_blocking=True)
        self.slot_mapping[:tokens].copy_(meta.slot_mapping, non_blocking=True)
        self.slot_mapping[tokens:size].fill_(-1)  # padding writes no KV
        self.query_start_loc[:reqs + 1].copy_(meta.query_start_loc, non_blocking=True)
        self.query_start_loc[reqs + 1:].fill_(tokens)  # requests past the step's: no query tokens
        self.seq_lens[:reqs].copy_(meta.seq_lens, non_blocking=True)
        self.seq_lens[reqs:].zero_()
        self.block_tables[:reqs, :num_blocks].copy_(meta.block_tables, non_blocking=True)
        self.logits_indices[:rows].copy_(inputs.logits_indices, non_blocking=True)
        self.logits_indices[rows:].zero_()  # an index inside every graph's token count
        self.graphs[size].replay()
        return self.logits[:rows]
