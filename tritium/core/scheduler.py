"""Token-budget scheduler: one invariant, no phases.

Each step every request may be given up to `num_tokens - num_computed_tokens` tokens, under
max_num_batched_tokens for the whole step and max_num_seqs running requests. Prefill, chunked
prefill, decode, prefix-cache hits and resumption after preemption are all that one rule:

    running (in order)  -> allocate_slots; on failure preempt the last running request, retry
    waiting (FCFS)      -> prefix match + allocate_slots; the first that does not fit stops admission

Preemption is by recompute: blocks are freed, num_computed_tokens = 0, and the request goes back
to the front of the waiting queue; it is resumed as a NewRequestData holding prompt + outputs.

Beam search (core/beam_search.py): the request the user submitted is the first beam and the only
one in `running` / `waiting`; all its beams are scheduled, preempted and resumed together, with
the same tokens computed (so they sample in the same step). After a step the beams are rebuilt
from their parents: each takes over its parent's KV blocks (ref counts; nothing copied) and a
partly filled last block shared by several is copied once it is written to (blocks_to_copy).
"""
from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Iterable, Optional

from tritium.core.beam_search import BeamSearch, Selection
from tritium.core.kv_cache_manager import KVCacheManager
from tritium.core.request import Request, RequestStatus, check_stop
from tritium.core.sched_output import (CachedRequestData, EngineCoreOutput, ModelRunnerOutput,
                                       NewRequestData, SchedulerOutput)

if TYPE_CHECKING:  # tritium.config imports torch; core stays importable without it
    from tritium.config import CacheConfig, ResolvedSchedulerConfig


class Scheduler:
    def __init__(self, scheduler_config: "ResolvedSchedulerConfig", cache_config: "CacheConfig"):
        self.config = scheduler_config
        self.max_num_seqs = scheduler_config.max_num_seqs
        self.max_num_batched_tokens = scheduler_config.max_num_batched_tokens
        self.max_model_len = scheduler_config.max_model_len
        self.enable_chunked_prefill = scheduler_config.enable_chunked_prefill
        self.no_evict = scheduler_config.capacity_policy == "guaranteed_no_evict"
        self.kv_cache_manager = KVCacheManager(cache_config.num_blocks, cache_config.block_size,
                                               cache_config.enable_prefix_caching)
        self.requests: dict[str, Request] = {}  # unfinished requests by id
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # priority order: the last one is preempted first
        # Finished, aborted or preempted since the last schedule(): the runner drops their state.
        self.finished_req_ids: set[str] = set()
        self.num_preemptions_total = 0  # for metrics and tests

    # ---- queries --------------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def get_num_unfinished_requests(self) -> int:
        return len(self.waiting) + len(self.running)

    def has_unfinished_requests(self) -> bool:
        return self.get_num_unfinished_requests() > 0

    # ---- requests in and out --------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already in the scheduler")
        request.status = RequestStatus.WAITING
        self.requests[request.request_id] = request
        self.waiting.append(request)
        if request.sampling_params.use_beam_search:
            request.beam = BeamSearch(request, self.max_model_len)

    def abort_requests(self, req_ids: Iterable[str]) -> list[Request]:
        if isinstance(req_ids, str):
            req_ids = [req_ids]
        aborted = []
        for req_id in req_ids:
            request = self.requests.get(req_id)
            if request is None or request.is_finished:
                continue
            if request.beam is not None:
                request = request.beam.root  # a beam stands for its whole search
            if request.status == RequestStatus.RUNNING:
                self.running.remove(request)
            else:
                self.waiting.remove(request)
            request.status = RequestStatus.FINISHED_ABORTED
            self._release(request)
            aborted.append(request)
        return aborted

    def _release(self, request: Request) -> None:
        """A finished request (all its beams) gives back its blocks and leaves the scheduler."""
        for seq in request.beam.beams if request.beam is not None else (request,):
            self.kv_cache_manager.free(seq)
            del self.requests[seq.request_id]
            self.finished_req_ids.add(seq.request_id)

    def _blocks_at_full_length(self, request: Request) -> int:
        """KV blocks the request (all its beams) holds once it has generated all it may
        (guaranteed_no_evict); a beam's copy of a shared block replaces the one it copies."""
        max_tokens = request.sampling_params.max_tokens
        full = self.max_model_len if max_tokens is None else min(
            request.num_prompt_tokens + max_tokens, self.max_model_len)
        width = request.sampling_params.beam_width if request.beam is not None else 1
        return width * -(-full // self.kv_cache_manager.block_size)

    def _blocks_still_needed(self) -> int:
        """Blocks the running requests will still allocate before they finish."""
        held = self.kv_cache_manager.req_to_blocks
        return sum(self._blocks_at_full_length(r) - sum(len(held.get(seq.request_id, ()))
                                                        for seq in (r.beam.beams if r.beam is not None else (r,)))
                   for r in self.running)

    def _preempt(self, request: Request) -> None:
        if request.beam is not None:
            for beam in request.beam.beams[1:]:  # the first beam is the request itself
                self.kv_cache_manager.free(beam)
                beam.num_computed_tokens = 0
                self.finished_req_ids.add(beam.request_id)
        self.kv_cache_manager.free(request)
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0  # a token still in flight is appended when it arrives
        request.num_preemptions += 1
        self.num_preemptions_total += 1
        self.waiting.appendleft(request)
        self.finished_req_ids.add(request.request_id)

    # ---- one step -------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        budget = self.max_num_batched_tokens
        num_scheduled: dict[str, int] = {}
        cached_reqs: list[CachedRequestData] = []
        new_reqs: list[Request] = []
        blocks_to_copy: list[tuple[int, int]] = []
        preempted = False

        i = 0
        while i < len(self.running) and budget > 0:
            request = self.running[i]
            if request.beam is not None:  # every beam of the search together
                num, preempted_any = self._schedule_beams(request, budget, num_scheduled, cached_reqs, new_reqs,
                                                          blocks_to_copy)
                preempted |= preempted_any
                if num is None:
                    break  # the search preempted itself: nothing after it is left to schedule
                budget -= num
                i += 1
                continue
            num_new = min(request.num_tokens + request.num_output_placeholders - request.num_computed_tokens, budget)
            if num_new <= 0 or (request.num_output_placeholders and request.length_capped(self.max_model_len)):
                i += 1  # nothing to do until its outputs arrive
                continue
            while (new_blocks := self.kv_cache_manager.allocate_slots(request, num_new)) is None:
                victim = self.running.pop()  # lowest priority; never one scheduled before i
                self._preempt(victim)
                preempted = True
                if victim is request:
                    break
            if new_blocks is None:
                break  # the request preempted itself: nothing after it is left to schedule
            cached_reqs.append(CachedRequestData(request.request_id, [b.block_id for b in new_blocks],
                                                 request.num_computed_tokens))
            num_scheduled[request.request_id] = num_new
            budget -= num_new
            i += 1

        # Admitting while memory is short would only preempt again next step.
        reserved = self._blocks_still_needed() if self.waiting and self.no_evict else 0
        while (self.waiting and not preempted and budget > 0
               and len(self.running) < self.max_num_seqs):
            request = self.waiting[0]
            if request.beam is not None:
                need = self._blocks_at_full_length(request) if self.no_evict else 0
                free_before = self.kv_cache_manager.num_free_blocks
                if reserved + need > free_before:
                    break  # guaranteed_no_evict: wait for room for every beam at full length
                num = self._admit_beams(request, budget, num_scheduled, new_reqs)
                if num is None:
                    break  # FCFS: later requests do not overtake it
                reserved += need - (free_before - self.kv_cache_manager.num_free_blocks)
                self.waiting.popleft()
                self.running.append(request)
                budget -= num
                continue
            hit_blocks, num_hit_tokens = self.kv_cache_manager.get_computed_blocks(request)
            need = 0
            if self.no_evict:  # `reserved`: blocks the admitted requests will still allocate
                need = self._blocks_at_full_length(request) - len(hit_blocks)
                if reserved + need > self.kv_cache_manager.num_free_blocks:
                    break  # FCFS: wait until running requests finish and give their blocks back
            num_new = request.num_tokens - num_hit_tokens
            if not self.enable_chunked_prefill and num_new > budget:
                break
            num_new = min(num_new, budget)
            new_blocks = self.kv_cache_manager.allocate_slots(request, num_new, hit_blocks)
            if new_blocks is None:
                break  # FCFS: later requests do not overtake it
            reserved += need - len(new_blocks)
            self.waiting.popleft()
            request.num_computed_tokens = num_hit_tokens
            if request.num_cached_tokens < 0:
                request.num_cached_tokens = num_hit_tokens
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            new_reqs.append(request)
            num_scheduled[request.request_id] = num_new
            budget -= num_new

        output = SchedulerOutput(
            scheduled_new_reqs=[
                NewRequestData(req_id=r.request_id, token_ids=list(r.all_token_ids),
                               num_prompt_tokens=r.num_prompt_tokens, sampling_params=r.sampling_params,
                               block_ids=self.kv_cache_manager.get_block_ids(r.request_id),
                               num_computed_tokens=r.num_computed_tokens,
                               num_beam_candidates=r.beam.num_candidates if r.beam is not None else 0)
                for r in new_reqs],
            scheduled_cached_reqs=cached_reqs,
            num_scheduled_tokens=num_scheduled,
            total_num_scheduled_tokens=self.max_num_batched_tokens - budget,
            finished_req_ids=self.finished_req_ids,
            blocks_to_copy=blocks_to_copy,
        )
        self.finished_req_ids = set()
        # The tokens count as computed once scheduled (the runner computes exactly these); a
        # request whose step reaches the end of its tokens samples one: a placeholder until then.
        for req_id, n in num_scheduled.items():
            request = self.requests[req_id]
            request.num_computed_tokens += n
            if request.num_computed_tokens == request.num_tokens + request.num_output_placeholders:
                request.num_output_placeholders += 1
        return output

    def update_from_output(self, scheduler_output: SchedulerOutput,
                           model_runner_output: ModelRunnerOutput) -> list[EngineCoreOutput]:
        mro = model_runner_output
        outputs: list[EngineCoreOutput] = []
        finished: list[Request] = []
        for req_id, token_id, logprobs in zip(mro.req_ids, mro.sampled_token_ids, mro.logprobs):
            request = self.requests.get(req_id)
            if request is None or request.is_finished:
                continue  # aborted (or finished a step earlier) while the step ran
            if request.num_output_placeholders <= 0:
                raise RuntimeError(f"request {req_id} received a token it was not scheduled to sample")
            request.num_output_placeholders -= 1
            request.append_output_token_ids(token_id)
            preempted = request.status == RequestStatus.PREEMPTED  # its in-flight token arrived after preemption
            stopped = check_stop(request, self.max_model_len)
            if stopped and preempted:
                self.waiting.remove(request)
            outputs.append(EngineCoreOutput(
                req_id=req_id, new_token_ids=[token_id],
                new_logprobs=[logprobs] if logprobs is not None else [],
                finish_reason=request.finish_reason if stopped else None,
                stop_reason=request.stop_reason if stopped else None,
                num_cached_tokens=max(request.num_cached_tokens, 0)))
            if stopped:
                finished.append(request)
        if mro.beam_candidates:
            self._advance_beams(mro, outputs, finished)
        if mro.has_extras:
            self._attach_extras(outputs, scheduler_output, mro)
        for request in finished:
            self._release(request)
        if finished:
            self.running = [r for r in self.running if not r.is_finished]
        return outputs

    def _attach_extras(self, outputs: list[EngineCoreOutput], so: SchedulerOutput, mro: ModelRunnerOutput) -> None:
        """Prompt logprobs and context logits (less the prompt positions sent before a preemption)
        and generation logits onto this step's outputs; a prefill chunk that sampled nothing gets
        an output of its own."""
        by_id = {out.req_id: out for out in outputs}
        for req_id, logits in mro.generation_logits.items():
            if req_id in by_id:
                by_id[req_id].new_generation_logits = logits.unsqueeze(0)  # [1, V]
        for req_id in mro.prompt_logprobs.keys() | mro.context_logits.keys():
            request = self.requests.get(req_id)
            if request is None:
                continue
            start = so.num_computed_before(req_id)
            prompt_logprobs = self._unsent(request, "num_prompt_logprobs_sent", start,
                                           mro.prompt_logprobs.get(req_id, []))
            context_logits = self._unsent(request, "num_context_logits_sent", start, mro.context_logits.get(req_id))
            out = by_id.get(req_id)
            if out is None:
                if not prompt_logprobs and (context_logits is None or not len(context_logits)):
                    continue
                out = EngineCoreOutput(req_id=req_id, new_token_ids=[],
                                       num_cached_tokens=max(request.num_cached_tokens, 0))
                outputs.append(out)
            out.new_prompt_logprobs = prompt_logprobs
            out.new_context_logits = context_logits

    @staticmethod
    def _unsent(request: Request, counter: str, start: int, entries):
        """entries cover prompt positions start, start + 1, ...; drop those already sent (a resumed
        request recomputes its prompt) and advance the request's counter."""
        if entries is None or not len(entries):
            return entries
        sent = getattr(request, counter)
        setattr(request, counter, max(sent, start + len(entries)))
        return entries[max(sent - start, 0):]

    # ---- beam search ------------------------------------------------------------------------
    def _schedule_beams(self, request: Request, budget: int, num_scheduled: dict[str, int],
                        cached_reqs: list[CachedRequestData], new_reqs: list[Request],
                        blocks_to_copy: list[tuple[int, int]]) -> tuple[Optional[int], bool]:
        """Schedule every beam of a running search for the same tokens, or none. Returns (tokens
        scheduled, None if the search preempted itself; whether anything was preempted)."""
        search = request.beam
        beams = search.beams
        num_new = min(request.num_tokens - request.num_computed_tokens, budget // len(beams))
        if num_new <= 0:
            return 0, False
        kv = self.kv_cache_manager
        # Blocks this needs: new ones, plus one copy per extra holder of a shared block to be written.
        shared = [kv.shared_write_block(b) for b in beams]
        need = sum(kv.num_new_blocks(b, num_new) for b in beams) + sum(
            min(blk.ref_cnt, shared.count(blk)) - 1 for blk in set(shared) if blk is not None)
        preempted = False
        while need > kv.num_free_blocks:
            victim = self.running.pop()  # lowest priority; never one scheduled before this search
            self._preempt(victim)
            preempted = True
            if victim is request:
                return None, True
        for beam in beams:
            copy = kv.copy_on_write(beam)
            if copy is not None:
                blocks_to_copy.append(copy)
            new_blocks = kv.allocate_slots(beam, num_new)
            if search.resend:
                new_reqs.append(beam)
            else:
                cached_reqs.append(CachedRequestData(beam.request_id, [b.block_id for b in new_blocks],
                                                     beam.num_computed_tokens))
            num_scheduled[beam.request_id] = num_new
        search.resend = False
        return num_new * len(beams), preempted

    def _admit_beams(self, request: Request, budget: int, num_scheduled: dict[str, int],
                     new_reqs: list[Request]) -> Optional[int]:
        """Admit a waiting search (new, or resumed after preemption) with every beam at the same
        computed length (the prefix all of them hit in the cache). None when it does not fit."""
        beams = request.beam.beams
        kv = self.kv_cache_manager
        hits = [kv.get_computed_blocks(b)[0] for b in beams]
        num_hit_blocks = min(len(h) for h in hits)
        hits = [h[:num_hit_blocks] for h in hits]
        num_hit_tokens = num_hit_blocks * kv.block_size
        num_new = request.num_tokens - num_hit_tokens
        if not self.enable_chunked_prefill and num_new * len(beams) > budget:
            return None
        num_new = min(num_new, budget // len(beams))
        evictable = {b.block_id for h in hits for b in h if b.ref_cnt == 0}  # leave the free queue when hit
        if num_new <= 0 or (sum(kv.num_new_blocks(b, num_new, num_hit_blocks) for b in beams) + len(evictable)
                            > kv.num_free_blocks):
            return None
        for beam, hit in zip(beams, hits):
            kv.allocate_slots(beam, num_new, hit)
            beam.num_computed_tokens = num_hit_tokens
            beam.status = RequestStatus.RUNNING
            new_reqs.append(beam)
            num_scheduled[beam.request_id] = num_new
        if request.num_cached_tokens < 0:
            request.num_cached_tokens = num_hit_tokens
        request.beam.resend = False  # they go to the runner in full now
        return num_new * len(beams)

    def _advance_beams(self, mro: ModelRunnerOutput, outputs: list[EngineCoreOutput],
                       finished: list[Request]) -> None:
        """One step of each search whose beams reported their candidates: finished sequences and
        the next beams; a search that is done gets its final output."""
        roots = {}
        for beam_id in mro.beam_candidates:
            beam = self.requests.get(beam_id)
            if beam is not None and not beam.is_finished:
                roots[beam.beam.root.request_id] = beam.beam.root
        for root in roots.values():
            search = root.beam
            missing = [b.request_id for b in search.beams if b.request_id not in mro.beam_candidates]
            if missing:
                raise RuntimeError(f"beam search {root.request_id}: beams {missing} reported no candidates")
            generation_logits = ([mro.generation_logits[b.request_id] for b in search.beams]
                                 if root.sampling_params.return_generation_logits else None)
            selection = search.step([mro.beam_candidates[b.request_id] for b in search.beams], generation_logits)
            for beam in search.beams:
                beam.num_output_placeholders = 0
                self.finished_req_ids.add(beam.request_id)  # the runner's copies are outdated either way
            if not selection.done:
                self._rebuild_beams(search, selection)
                if root.sampling_params.return_perf_metrics:  # the front times each step
                    outputs.append(EngineCoreOutput(req_id=root.request_id, new_token_ids=[], beam_step=True,
                                                    num_cached_tokens=max(root.num_cached_tokens, 0)))
                continue
            best = search.best(root.sampling_params.n)
            stopped = best[0].finish_reason == "stop"
            root.status = RequestStatus.FINISHED_STOPPED if stopped else RequestStatus.FINISHED_LENGTH
            outputs.append(EngineCoreOutput(req_id=root.request_id, new_token_ids=[],
                                            finish_reason=root.finish_reason, beam_hypotheses=best, beam_step=True,
                                            num_cached_tokens=max(root.num_cached_tokens, 0)))
            finished.append(root)

    def _rebuild_beams(self, search: BeamSearch, selection: Selection) -> None:
        """Beam j becomes its parent's sequence plus its token, on its parent's KV blocks."""
        old = search.beams
        snapshots = [(b.output_token_ids, b.block_hashes) for b in old]
        beams = [old[j] if j < len(old) else self._new_beam(search, j) for j in range(len(selection.parents))]
        for dropped in old[len(beams):]:
            del self.requests[dropped.request_id]
        self.kv_cache_manager.reparent([b.request_id for b in beams], selection.parents,
                                       [b.request_id for b in old])
        num_computed = old[0].num_computed_tokens
        for beam, parent, token in zip(beams, selection.parents, selection.tokens):
            outputs, hashes = snapshots[parent]
            beam.output_token_ids = outputs + [token]
            beam.all_token_ids = beam.prompt_token_ids + beam.output_token_ids
            beam.block_hashes = list(hashes)
            beam.num_computed_tokens = num_computed
        search.beams = beams
        search.resend = True

    def _new_beam(self, search: BeamSearch, index: int) -> Request:
        root = search.root
        beam = Request(f"{root.request_id}#beam{index}", root.prompt_token_ids, root.sampling_params,
                       arrival_time=root.arrival_time)
        beam.eos_token_ids = root.eos_token_ids
        beam.status = RequestStatus.RUNNING
        beam.beam = search
        self.requests[beam.request_id] = beam
        return beam
