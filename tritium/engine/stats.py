"""Per-step engine statistics: a few counters per step, cheap enough to record always.

EngineCore records one IterationStats for every step that ran the model into an IterationStatsLog:
a bounded deque (the oldest entries drop when nobody drains it) plus running totals that never
drop. `LLM.get_stats()` drains the deque (TensorRT-LLM's llm.get_stats()); benchmarks and metrics
exporters read the same source.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tritium.core.sched_output import ModelRunnerOutput, SchedulerOutput
    from tritium.core.scheduler import Scheduler


@dataclass(frozen=True, slots=True)
class IterationStats:
    iteration: int  # steps since the engine started; a gap means entries dropped from a full log
    timestamp: float  # time.time() when the step ended
    step_time_s: float  # wall time the step added: scheduling (or the previous step's end) to its update
    num_scheduled_requests: int  # the batch: requests given tokens this step
    num_running: int  # requests holding KV blocks after scheduling
    num_waiting: int  # requests queued after scheduling (new, or preempted)
    num_scheduled_tokens: int  # tokens computed this step, all requests together
    num_prompt_tokens: int  # of which prompt positions (prefill and prefill chunks)
    num_generation_tokens: int  # tokens sampled this step
    kv_cache_usage: float  # fraction of KV blocks in use after scheduling
    num_preemptions: int  # requests preempted this step

    @property
    def num_in_flight(self) -> int:
        """Requests the engine holds (running or waiting): what a client's concurrency limit bounds."""
        return self.num_running + self.num_waiting


@dataclass(frozen=True)
class SchedulerSnapshot:
    """The scheduler's state now (for metrics gauges), read without locking: each field is one read."""
    num_running: int
    num_waiting: int
    kv_cache_usage: float  # share of KV blocks held by requests, 0..1
    num_preemptions_total: int

    @classmethod
    def of(cls, scheduler: "Scheduler") -> "SchedulerSnapshot":
        return cls(num_running=scheduler.num_running, num_waiting=scheduler.num_waiting,
                   kv_cache_usage=scheduler.kv_cache_manager.usage,
                   num_preemptions_total=scheduler.num_preemptions_total)


@dataclass
class EngineTotals:
    """Running totals since the engine started (for counters that must not lose steps)."""

    num_steps: int = 0
    num_prompt_tokens: int = 0
    num_generation_tokens: int = 0
    num_preemptions: int = 0
    busy_time_s: float = 0.0


class StepProbe:
    """One step's measurements until its update: its start, and the scheduler's state right after
    scheduling it (the update frees finished requests' blocks)."""

    __slots__ = ("start", "preemptions_before", "num_preemptions", "num_running", "num_waiting", "kv_cache_usage",
                 "num_prompt_tokens")

    def __init__(self, scheduler: "Scheduler"):
        self.start = time.perf_counter()
        self.preemptions_before = scheduler.num_preemptions_total


class PromptProgress:
    """Prompt tokens each request in prefill has still to compute, so that counting a step's prompt
    tokens costs O(new + prefilling requests), nothing per decoding request."""

    def __init__(self):
        self._remaining: dict[str, int] = {}

    def count(self, so: "SchedulerOutput") -> int:
        remaining, scheduled = self._remaining, so.num_scheduled_tokens
        for req_id in so.finished_req_ids:  # finished, aborted or preempted (a resumed one comes back as new)
            remaining.pop(req_id, None)
        for new in so.scheduled_new_reqs:
            if new.num_prompt_tokens > new.num_computed_tokens:
                remaining[new.req_id] = new.num_prompt_tokens - new.num_computed_tokens
        total = 0
        for req_id in [r for r in remaining if r in scheduled]:
            n, left = scheduled[req_id], remaining[req_id]
            total += min(n, left)
            if left > n:
                remaining[req_id] = left - n
            else:
                del remaining[req_id]
        return total


class IterationStatsLog:
    def __init__(self, maxlen: int = 16384):
        self._entries: deque[IterationStats] = deque(maxlen=maxlen)
        self._lock = threading.Lock()  # recorded on the engine thread, drained on another
        self._iteration = 0
        self._last_end = 0.0
        self._prompt_progress = PromptProgress()
        self.totals = EngineTotals()

    def begin_step(self, scheduler: "Scheduler") -> StepProbe:
        return StepProbe(scheduler)

    def scheduled(self, probe: StepProbe, scheduler: "Scheduler", so: "SchedulerOutput") -> None:
        """Right after schedule(): what the step holds (the update frees finished requests)."""
        probe.num_preemptions = scheduler.num_preemptions_total - probe.preemptions_before  # only schedule() preempts
        probe.num_running = scheduler.num_running
        probe.num_waiting = scheduler.num_waiting
        probe.kv_cache_usage = scheduler.kv_cache_manager.usage
        probe.num_prompt_tokens = self._prompt_progress.count(so)

    def end_step(self, probe: StepProbe, so: "SchedulerOutput", runner_out: "ModelRunnerOutput") -> None:
        # Overlapped steps (the next one scheduled before this one's update) count from the last end.
        end = time.perf_counter()
        start, self._last_end = max(probe.start, self._last_end), end
        stats = IterationStats(
            iteration=self._iteration, timestamp=time.time(), step_time_s=end - start,
            num_scheduled_requests=len(so.num_scheduled_tokens), num_running=probe.num_running,
            num_waiting=probe.num_waiting, num_scheduled_tokens=so.total_num_scheduled_tokens,
            num_prompt_tokens=probe.num_prompt_tokens,
            num_generation_tokens=len(runner_out.req_ids) + len(runner_out.beam_candidates),  # beams: one each
            kv_cache_usage=probe.kv_cache_usage, num_preemptions=probe.num_preemptions)
        with self._lock:
            self._iteration += 1
            self._entries.append(stats)
            t = self.totals
            t.num_steps += 1
            t.num_prompt_tokens += stats.num_prompt_tokens
            t.num_generation_tokens += stats.num_generation_tokens
            t.num_preemptions += stats.num_preemptions
            t.busy_time_s += stats.step_time_s

    def drain(self) -> list[IterationStats]:
        """The entries recorded since the last drain, oldest first."""
        with self._lock:
            entries = list(self._entries)
            self._entries.clear()
        return entries

    def snapshot_totals(self) -> EngineTotals:
        with self._lock:
            return EngineTotals(**vars(self.totals))
