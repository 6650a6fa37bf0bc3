"""Per-request runner state (persistent across steps) and the flattened batch tensors of one step.

Each running request owns a row of a persistent numpy block table for its lifetime in the
runner, so a step copies only the rows it schedules instead of rebuilding Python lists; the
step's positions, slots and sequence lengths are computed with numpy, not per token in Python.

Batch layout (request after request, this step's tokens only):
    input_ids / positions / slot_mapping: [T]  with T = sum of scheduled tokens
    request r's tokens: token_ids[num_computed : num_computed + num_scheduled]
    logits_indices: [N] index of the last token of each request that samples this step
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Optional

import numpy as np
import torch

from tritium.attention.backend import AttentionMetadata
from tritium.sampling_params import SamplingParams


@dataclass
class CachedRequestState:
    req_id: str
    token_ids: list[int]  # prompt + outputs known to the runner
    num_prompt_tokens: int
    sampling_params: SamplingParams
    block_ids: list[int]
    num_computed_tokens: int
    row: int = -1  # this request's row in the persistent block table


class BlockTable:
    """Block ids of every running request, one row each, kept in numpy between steps."""

    def __init__(self, max_rows: int, max_blocks_per_row: int):
        self.table = np.zeros((max_rows, max_blocks_per_row), dtype=np.int32)  # [rows, blocks]
        self.num_blocks = np.zeros(max_rows, dtype=np.int64)  # [rows]
        self._free_rows = list(range(max_rows - 1, -1, -1))

    @property
    def max_blocks_per_row(self) -> int:
        return self.table.shape[1]

    def add(self, block_ids: list[int]) -> int:
        if not self._free_rows:
            raise RuntimeError(f"more than {self.table.shape[0]} requests in the runner at once")
        row = self._free_rows.pop()
        self.num_blocks[row] = 0
        self.append(row, block_ids)
        return row

    def append(self, row: int, block_ids: list[int]) -> None:
        n, start = len(block_ids), int(self.num_blocks[row])
        if start + n > self.max_blocks_per_row:
            raise RuntimeError(f"a request needs {start + n} KV blocks; the runner was sized for {self.max_blocks_per_row}")
        self.table[row, start:start + n] = block_ids
        self.num_blocks[row] = start + n

    def remove(self, row: int) -> None:
        self._free_rows.append(row)


@dataclass
class StepInputs:
    input_ids: torch.Tensor  # [T] long
    positions: torch.Tensor  # [T] long
    attn_metadata: AttentionMetadata
    logits_indices: torch.Tensor  # [N] long
    samples: np.ndarray  # [R] bool: does request r sample a token this step
    query_start_loc: np.ndarray  # [R + 1] host copy: request r's tokens are [qsl[r], qsl[r + 1])
    seq_lens: np.ndarray  # [R] host copy: tokens per request once this step is done
    # Inputs whose token is still being sampled on the device by the step before (overlapped
    # engine): positions in input_ids [M] and the requests (indices into the step's states) [M].
    placeholder_tokens: np.ndarray
    placeholder_reqs: np.ndarray

    @property
    def is_pure_decode(self) -> bool:
        return self.attn_metadata.is_pure_decode


class StagingBuffers:
    """Reused host buffers for the step's host->device copies (pinned on CUDA, so the copies do
    not wait for the GPU). The caller must not reuse a set while a copy from it may be in flight:
    the runner alternates two sets and waits for step N's outputs before building step N + 2."""

    def __init__(self, device: torch.device):
        self.device = device
        self._buffers: dict[tuple[torch.dtype, str], torch.Tensor] = {}

    def to_device(self, arrays: list[np.ndarray], dtype: torch.dtype, purpose: str = "inputs") -> list[torch.Tensor]:
        """Copy 1-D or 2-D arrays to the device in one transfer; returns device views of each.
        Each (dtype, purpose) has its own buffer: a second transfer in the same step must not
        overwrite the host data of a first one that may still be queued."""
        sizes = [a.size for a in arrays]
        total = sum(sizes)
        buf = self._buffers.get((dtype, purpose))
        if buf is None or buf.numel() < total:
            buf = torch.empty(max(total, 1024) * 2, dtype=dtype, pin_memory=self.device.type == "cuda")
            self._buffers[(dtype, purpose)] = buf
        host = buf.numpy()
        offset = 0
        for a, n in zip(arrays, sizes):
            host[offset:offset + n] = a.reshape(-1)
            offset += n
        # On the CPU .to() would alias the reused buffer: copy instead.
        dev = buf[:total].to(self.device, non_blocking=True) if self.device.type == "cuda" else buf[:total].clone()
        out, offset = [], 0
        for a, n in zip(arrays, sizes):
            out.append(dev[offset:offset + n].view(a.shape))
            offset += n
        return out


def build_step_inputs(states: list[CachedRequestState], num_scheduled: dict[str, int], block_table: BlockTable,
                      block_size: int, staging: StagingBuffers, num_kv_splits: Optional[int] = None) -> StepInputs:
    n = len(states)
    starts = np.fromiter((s.num_computed_tokens for s in states), np.int64, n)  # [R]
    counts = np.fromiter((num_scheduled[s.req_id] for s in states), np.int64, n)  # [R]
    known = np.fromiter((len(s.token_ids) for s in states), np.int64, n)  # [R]
    rows = np.fromiter((s.row for s in states), np.int64, n)  # [R]
    ends = starts + counts  # [R] = seq_lens
    qsl = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=qsl[1:])
    num_tokens = int(qsl[-1])
    token_req = np.repeat(np.arange(n), counts)  # [T] request index of each token
    positions = np.arange(num_tokens) - np.repeat(qsl[:-1] - starts, counts)  # [T]
    # Only the last token of a request can be unknown here (a placeholder): fed in as 0 and
    # replaced on the device.
    if num_tokens == n:  # one token each (decode): no slicing
        input_ids = np.fromiter((s.token_ids[p] if p < len(s.token_ids) else 0
                                 for s, p in zip(states, starts.tolist())), np.int64, n)
    else:
        input_ids = np.fromiter(chain.from_iterable(_padded(s.token_ids, a, c)
                                                    for s, a, c in zip(states, starts.tolist(), counts.tolist())),
                                np.int64, num_tokens)
    placeholder_tokens = np.nonzero(positions >= known[token_req])[0]  # [M]
    slots = (block_table.table[rows[token_req], positions // block_size].astype(np.int64) * block_size
             + positions % block_size)  # [T]
    # A request samples when this step's tokens reach the end of what it knows; a partial
    # prefill chunk does not.
    samples = ends >= known  # [R]
    logits_indices = qsl[1:][samples] - 1  # [N]
    max_blocks = -(-int(ends.max()) // block_size)
    tables = block_table.table[rows, :max_blocks]  # [R, max_blocks] int32

    ids_d, pos_d, slots_d, logits_d, qsl_d = staging.to_device(
        [input_ids, positions, slots, logits_indices, qsl], torch.int64)
    seq_lens_d, tables_d = staging.to_device([ends.astype(np.int32), tables], torch.int32)
    meta = AttentionMetadata(
        num_actual_tokens=num_tokens,
        query_start_loc=qsl_d.int(),
        seq_lens=seq_lens_d,
        block_tables=tables_d,
        slot_mapping=slots_d,
        max_query_len=int(counts.max()),
        max_seq_len=int(ends.max()),
        query_start_loc_cpu=qsl.tolist(),
        seq_lens_cpu=ends.tolist(),
        num_kv_splits=num_kv_splits,
        num_decodes=n if num_tokens == n else int(np.argmax(counts != 1)),
    )
    return StepInputs(input_ids=ids_d, positions=pos_d, attn_metadata=meta, logits_indices=logits_d,
                      samples=samples, query_start_loc=qsl, seq_lens=ends, placeholder_tokens=placeholder_tokens,
                      placeholder_reqs=token_req[placeholder_tokens])


def _padded(token_ids: list[int], start: int, count: int) -> list[int]:
    tokens = token_ids[start:start + count]
    return tokens if len(tokens) == count else tokens + [0] * (count - len(tokens))
