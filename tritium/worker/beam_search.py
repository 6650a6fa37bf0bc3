"""The runner's part of beam search: beam rows report their most likely next tokens instead of
sampling one (the scheduler's BeamSearch chooses), and shared KV blocks are copied before a beam
writes into them (copy-on-write, listed in SchedulerOutput.blocks_to_copy)."""
from __future__ import annotations

from typing import Optional

import torch

from tritium.core.sched_output import BeamCandidates


class BeamRows:
    def __init__(self):
        self.num_candidates: dict[str, int] = {}  # beam req_id -> next tokens to report

    @property
    def active(self) -> bool:
        return bool(self.num_candidates)

    def add(self, req_id: str, num_candidates: int) -> None:
        if num_candidates:
            self.num_candidates[req_id] = num_candidates

    def remove(self, req_id: str) -> None:
        self.num_candidates.pop(req_id, None)

    def split(self, req_ids: list[str]) -> tuple[list[int], list[int]]:
        """Row indices of beams and of the other (sampling) rows."""
        beams = [i for i, r in enumerate(req_ids) if r in self.num_candidates]
        if not beams:
            return [], list(range(len(req_ids)))
        taken = set(beams)
        return beams, [i for i in range(len(req_ids)) if i not in taken]

    def candidates(self, logits: torch.Tensor, temperatures: list[float], req_ids: list[str],
                   non_blocking: bool) -> "BeamCandidateTensors":
        """logits [n, V] float32 (processed: penalties, bans, ...) -> each row's top-K of
        log_softmax(logits / temperature), copied to the host. Temperature 0 means 1, as in
        TensorRT-LLM (beam search does not sample)."""
        temps = torch.tensor([t if t > 0 else 1.0 for t in temperatures], dtype=torch.float32)
        if any(t != 1.0 for t in temps.tolist()):
            logits = logits / temps.to(logits.device, non_blocking=True).view(-1, 1)
        ks = [self.num_candidates[r] for r in req_ids]
        values, ids = torch.log_softmax(logits, dim=-1).topk(min(max(ks), logits.shape[-1]), dim=-1)  # [n, K]
        pin = values.is_cuda
        host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=pin).copy_(t, non_blocking=non_blocking)
                for t in (values, ids)]
        return BeamCandidateTensors(req_ids, ks, host[0], host[1])


class BeamCandidateTensors:
    """Host copies of a step's beam candidates (complete once the step's event has fired)."""

    def __init__(self, req_ids: list[str], ks: list[int], logprobs: torch.Tensor, token_ids: torch.Tensor):
        self.req_ids, self.ks, self.logprobs, self.token_ids = req_ids, ks, logprobs, token_ids

    def tolists(self) -> dict[str, BeamCandidates]:
        lps, ids = self.logprobs.tolist(), self.token_ids.tolist()
        return {r: BeamCandidates(token_ids=ids[i][:k], logprobs=lps[i][:k])
                for i, (r, k) in enumerate(zip(self.req_ids, self.ks))}


def beam_groups(req_ids: list[str]) -> list[list[int]]:
    """Rows of the same search together (beam ids are "<request>" and "<request>#beam<j>")."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(req_ids):
        groups.setdefault(r.partition("#beam")[0], []).append(i)
    return list(groups.values())


def copy_kv_blocks(kv_caches: list[torch.Tensor], pairs: list[tuple[int, int]],
                   device: Optional[torch.device] = None) -> None:
    """For each (source, destination): the destination block becomes a copy of the source block,
    in every layer's cache [2, num_blocks, block_size, kv_heads, head_dim]."""
    device = device or kv_caches[0].device
    index = torch.tensor(pairs, dtype=torch.long).to(device, non_blocking=True)  # [P, 2]
    src, dst = index[:, 0], index[:, 1]
    for cache in kv_caches:
        cache.index_copy_(1, dst, cache.index_select(1, src))
