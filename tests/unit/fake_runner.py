"""A CPU stand-in for the model runner that checks the scheduler contract as it goes.

It keeps per-request state the way a real runner does (from NewRequestData / CachedRequestData,
dropping finished_req_ids) and simulates the paged KV cache: the "KV" written at token position p
is a fingerprint of tokens[:p+1], the way real keys and values depend on the whole prefix. Before
"attending" it checks every context position's slot holds the right fingerprint, so a wrong block
table, a bad prefix hit or a block reused while still needed fails loudly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from tritium.core.sched_output import BeamCandidates, ModelRunnerOutput, SchedulerOutput


def toy_model(tokens: list[int]) -> int:
    """Deterministic next token from the whole sequence (never 0, the tests' EOS)."""
    return hash(tuple(tokens)) % 97 + 1


def toy_beam_candidates(tokens: list[int], k: int) -> BeamCandidates:
    """A beam row's k most likely next tokens under a deterministic toy distribution over 0..97."""
    scores = sorted(((-(hash((tuple(tokens), t)) % 1000) / 100.0, t) for t in range(98)), reverse=True)[:k]
    return BeamCandidates(token_ids=[t for _, t in scores], logprobs=[s for s, _ in scores])


@dataclass
class _State:
    tokens: list[int]
    num_computed: int
    block_ids: list[int]


class FakeRunner:
    def __init__(self, block_size: int, model: Callable[[list[int]], int] = toy_model):
        self.block_size = block_size
        self.model = model
        self.reqs: dict[str, _State] = {}
        self.kv: dict[int, int] = {}  # slot -> fingerprint of the prefix ending there
        self.beam_k: dict[str, int] = {}  # beam rows -> candidates to report
        self.num_blocks_copied = 0

    def _slot(self, st: _State, pos: int) -> int:
        return st.block_ids[pos // self.block_size] * self.block_size + pos % self.block_size

    def execute(self, so: SchedulerOutput, tokens: Optional[dict[str, int]] = None) -> ModelRunnerOutput:
        """Run one step; `tokens` overrides the toy model's sample for chosen requests."""
        for req_id in so.finished_req_ids:
            self.reqs.pop(req_id, None)
            self.beam_k.pop(req_id, None)
        for new in so.scheduled_new_reqs:
            assert new.req_id not in self.reqs, f"{new.req_id} sent as new while the runner holds it"
            self.reqs[new.req_id] = _State(list(new.token_ids), new.num_computed_tokens, list(new.block_ids))
            if new.num_beam_candidates:
                self.beam_k[new.req_id] = new.num_beam_candidates
        for src, dst in so.blocks_to_copy:  # before the step's writes, like the real runner
            self.num_blocks_copied += 1
            for offset in range(self.block_size):
                if src * self.block_size + offset in self.kv:
                    self.kv[dst * self.block_size + offset] = self.kv[src * self.block_size + offset]
        for cached in so.scheduled_cached_reqs:
            st = self.reqs[cached.req_id]
            assert st.num_computed == cached.num_computed_tokens, cached
            st.block_ids.extend(cached.new_block_ids)
        scheduled = {r.req_id for r in so.scheduled_new_reqs} | {r.req_id for r in so.scheduled_cached_reqs}
        assert scheduled == set(so.num_scheduled_tokens)
        assert so.total_num_scheduled_tokens == sum(so.num_scheduled_tokens.values())

        # Every layer writes the whole step's KV before any attention reads it.
        for req_id, n in so.num_scheduled_tokens.items():
            st = self.reqs[req_id]
            end = st.num_computed + n
            assert 0 < n and end <= len(st.tokens)
            assert len(st.block_ids) == -(-end // self.block_size), (req_id, st.block_ids, end)
            for p in range(st.num_computed, end):
                self.kv[self._slot(st, p)] = hash(tuple(st.tokens[:p + 1]))
        req_ids, sampled, beams = [], [], {}
        for req_id, n in so.num_scheduled_tokens.items():
            st = self.reqs[req_id]
            st.num_computed += n
            for p in range(st.num_computed):
                assert self.kv.get(self._slot(st, p)) == hash(tuple(st.tokens[:p + 1])), \
                    f"{req_id}: wrong KV at position {p} (block {st.block_ids[p // self.block_size]})"
            if st.num_computed == len(st.tokens):
                if req_id in self.beam_k:  # the scheduler picks the beam's next token
                    beams[req_id] = toy_beam_candidates(st.tokens, self.beam_k[req_id])
                    continue
                tok = (tokens or {}).get(req_id, self.model(st.tokens))
                st.tokens.append(tok)
                req_ids.append(req_id)
                sampled.append(tok)
        return ModelRunnerOutput(req_ids=req_ids, sampled_token_ids=sampled, logprobs=[None] * len(req_ids),
                                 beam_candidates=beams)
