"""EngineCore: the synchronous step loop body, token ids only: schedule -> execute -> update."""
from __future__ import annotations

from typing import Iterable

from tritium.core.request import Request
from tritium.core.scheduler import Scheduler
from tritium.core.sched_output import EngineCoreOutput
from tritium.worker.model_runner import ModelRunner


class EngineCore:
    def __init__(self, scheduler: Scheduler, runner: ModelRunner):
        self.scheduler = scheduler
        self.runner = runner

    def add_request(self, request: Request) -> None:
        self.scheduler.add_request(request)

    def abort_requests(self, req_ids: Iterable[str]) -> list[EngineCoreOutput]:
        """Abort requests; returns a final output for each that was still unfinished."""
        aborted = self.scheduler.abort_requests(list(req_ids))
        return [EngineCoreOutput(req_id=r.request_id, new_token_ids=[], finish_reason="abort",
                                 num_cached_tokens=max(r.num_cached_tokens, 0)) for r in aborted]

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests()

    def step(self) -> list[EngineCoreOutput]:
        sched_out = self.scheduler.schedule()
        runner_out = self.runner.execute_model(sched_out)
        if sched_out.is_empty:
            return []
        return self.scheduler.update_from_output(sched_out, runner_out)
