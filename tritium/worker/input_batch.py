"""Per-request runner state and the flattened batch tensors of one step.

Batch layout (request after request, this step's tokens only):
    input_ids / positions / slot_mapping: [T]  with T = sum of scheduled tokens
    request r's tokens: token_ids[num_computed : num_computed + num_scheduled]
    logits_indices: [N] index of the last token of each request that samples this step
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class StepInputs:
    input_ids: torch.Tensor  # [T] long
    positions: torch.Tensor  # [T] long
    attn_metadata: AttentionMetadata
    logits_indices: torch.Tensor  # [N] long
    samples: dict[str, bool]  # does this request sample a token this step
    num_scheduled: dict[str, int]
    token_offsets: dict[str, int]  # index of the request's first token in the flat batch


def build_step_inputs(states: list[CachedRequestState], num_scheduled: dict[str, int], block_size: int,
                      device: torch.device) -> StepInputs:
    input_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    query_start_loc = [0]
    seq_lens: list[int] = []
    logits_indices: list[int] = []
    samples: dict[str, bool] = {}
    offsets: dict[str, int] = {}
    for state in states:
        n = num_scheduled[state.req_id]
        start = state.num_computed_tokens
        end = start + n
        offsets[state.req_id] = len(input_ids)
        input_ids.extend(state.token_ids[start:end])
        positions.extend(range(start, end))
        blocks = state.block_ids
        slots.extend(blocks[p // block_size] * block_size + p % block_size for p in range(start, end))
        query_start_loc.append(len(input_ids))
        seq_lens.append(end)
        # A request samples when this step's tokens reach the end of what it knows;
        # a partial prefill chunk does not.
        samples[state.req_id] = end >= len(state.token_ids)
        if samples[state.req_id]:
            logits_indices.append(len(input_ids) - 1)

    max_blocks = max(len(s.block_ids) for s in states)
    table = torch.zeros((len(states), max_blocks), dtype=torch.int32)
    for r, state in enumerate(states):
        table[r, :len(state.block_ids)] = torch.tensor(state.block_ids, dtype=torch.int32)

    def to_dev(values, dtype):
        return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)

    meta = AttentionMetadata(
        num_actual_tokens=len(input_ids),
        query_start_loc=to_dev(query_start_loc, torch.int32),
        seq_lens=to_dev(seq_lens, torch.int32),
        block_tables=table.to(device, non_blocking=True),
        slot_mapping=to_dev(slots, torch.int64),
        max_query_len=max(num_scheduled[s.req_id] for s in states),
        max_seq_len=max(seq_lens),
        query_start_loc_cpu=query_start_loc,
        seq_lens_cpu=seq_lens,
    )
    return StepInputs(
        input_ids=to_dev(input_ids, torch.long),
        positions=to_dev(positions, torch.long),
        attn_metadata=meta,
        logits_indices=to_dev(logits_indices, torch.long),
        samples=samples,
        num_scheduled=dict(num_scheduled),
        token_offsets=offsets,
    )
