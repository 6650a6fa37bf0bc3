"""EngineCore: the step loop body, token ids only: schedule -> execute -> update.

With a runner that supports overlap (GPU), `step()` launches step N and only then waits for
step N - 1's tokens and turns them into outputs, so the host's scheduling, input building and
output handling run while the GPU computes:

    schedule N -> launch N -> finish N-1 (wait for its tokens, update the scheduler) -> outputs of N-1

A step whose requests need every token on the host first (penalties) finishes N - 1 before it
is launched. Elsewhere (CPU) each step finishes before step() returns.
"""
from __future__ import annotations

from typing import Iterable, Optional

from tritium.core.request import Request
from tritium.core.scheduler import Scheduler
from tritium.core.sched_output import EngineCoreOutput, SchedulerOutput
from tritium.engine.pacing import MAX_PACED_BATCH, StepPacer, late_scheduling_enabled
from tritium.engine.stats import IterationStatsLog, StepProbe


class EngineCore:
    def __init__(self, scheduler: Scheduler, runner):
        self.scheduler = scheduler
        self.runner = runner
        # (step, runner handle, stats, whether its GPU time feeds the pacer)
        self._in_flight: Optional[tuple[SchedulerOutput, object, StepProbe, bool]] = None
        self.stats = IterationStatsLog()
        # late scheduling (pacing.py): only where steps overlap and the runner can time them
        self.pacer: Optional[StepPacer] = None
        if late_scheduling_enabled() and getattr(runner, "supports_overlap", False):
            self.pacer = StepPacer()
            runner.time_steps = True

    def add_request(self, request: Request) -> None:
        self.scheduler.add_request(request)
        if self.pacer is not None:
            self.pacer.arrived()

    def pacing_delay(self) -> float:
        """Seconds the loop may wait for arrivals before the next step (late scheduling; else 0)."""
        return self.pacer.delay() if self.pacer is not None else 0.0

    def abort_requests(self, req_ids: Iterable[str]) -> list[EngineCoreOutput]:
        """Abort requests; returns a final output for each that was still unfinished."""
        aborted = self.scheduler.abort_requests(list(req_ids))
        return [EngineCoreOutput(req_id=r.request_id, new_token_ids=[], finish_reason="abort",
                                 num_cached_tokens=max(r.num_cached_tokens, 0)) for r in aborted]

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests() or self._in_flight is not None

    def discard_in_flight(self) -> None:
        """After a failure: forget the step in flight (its requests are being failed)."""
        self._in_flight = None

    def step(self) -> list[EngineCoreOutput]:
        """Schedule and launch a step; return the outputs of the step that completed."""
        start = self.pacer.clock() if self.pacer is not None else 0.0
        probe = self.stats.begin_step(self.scheduler)
        sched_out = self.scheduler.schedule()
        self.stats.scheduled(probe, self.scheduler, sched_out)
        overlap = getattr(self.runner, "supports_overlap", False) and self.runner.can_overlap(sched_out)
        outputs = [] if overlap else self._finish_in_flight()
        handle = self.runner.execute_model(sched_out)
        launched = self.pacer.clock() if self.pacer is not None else 0.0
        paced = self.pacer is not None and overlap and _is_small_pure_decode(sched_out)
        if overlap:
            outputs = self._finish_in_flight()
        # An empty step is not kept in flight: were it, an idle engine would never look idle and
        # its loop would spin through empty steps (93,000 a second with the CPU runner overlapped,
        # a core and the GIL held).
        self._in_flight = None if sched_out.is_empty else (sched_out, handle, probe, paced)
        if not overlap:
            outputs += self._finish_in_flight()  # nothing is left in flight between steps
        if self.pacer is not None:  # a decode step in flight started on the GPU as its predecessor's tokens came
            self.pacer.launched(launched - start, max(launched, self.pacer.clock()) if paced else None)
        return outputs

    def _finish_in_flight(self) -> list[EngineCoreOutput]:
        if self._in_flight is None:
            return []
        sched_out, handle, probe, paced = self._in_flight
        self._in_flight = None
        runner_out = handle.result() if hasattr(handle, "result") else handle
        if paced:  # its GPU time estimates the next paced step's
            timed = getattr(handle, "gpu_seconds", None)
            self.pacer.finished_decode(timed() if timed is not None else None)
        if sched_out.is_empty:
            return []
        outputs = self.scheduler.update_from_output(sched_out, runner_out)
        self.stats.end_step(probe, sched_out, runner_out)
        return outputs


def _is_small_pure_decode(so: SchedulerOutput) -> bool:
    """At most MAX_PACED_BATCH requests, one token each, none new: a step whose GPU time repeats
    and that late scheduling paces."""
    return (not so.is_empty and len(so.num_scheduled_tokens) <= MAX_PACED_BATCH and not so.scheduled_new_reqs
            and all(n == 1 for n in so.num_scheduled_tokens.values()))
