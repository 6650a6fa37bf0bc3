"""Runs the EngineCore step loop in a background thread.

Callers add and abort requests from any thread; commands queue up and are applied between
steps. Every step's outputs go to `handle_outputs`, which returns the request ids to abort
(stop strings are found in the front, which sees text). A failing step (or command) fails the
requests in flight at that moment and returns their blocks; the loop keeps serving new ones.
"""
from __future__ import annotations

import gc
import logging
import queue
import threading
from typing import Callable, Iterable, Optional

import torch

from tritium.core.request import Request
from tritium.core.sched_output import EngineCoreOutput
from tritium.engine.engine_core import EngineCore
from tritium.engine.stats import EngineTotals, IterationStats, SchedulerSnapshot

logger = logging.getLogger(__name__)

OutputHandler = Callable[[list[EngineCoreOutput]], Iterable[str]]
ErrorHandler = Callable[[BaseException, list[str]], None]

# Allocations between young collections while an engine runs (Python's default: 700): a step of
# a few thousand requests allocates tens of thousands of objects.
GC_YOUNG_THRESHOLD = 10_000
_gc_lock = threading.Lock()
_gc_engines = 0  # engines running with relax_gc
_gc_thresholds = gc.get_threshold()  # the process's own, restored when the last engine stops


def relax_gc() -> None:
    """Keep the heap built so far (model, block pool, graphs, tokenizer: 235k tracked objects in a
    SmolLM2 engine's process) out of
    the cyclic collector's scans and collect young objects less often (undone by restore_gc).
    A full collection walks every tracked object (118 ms for a SmolLM2 engine on 2
    CPU cores) and the steps' own objects set them off: on that CPU the host bookkeeping of a
    2048-request decode step (scheduling, inputs, outputs, the front's handling of them) took
    28.8 ms as is, 18.6 frozen, 15.1 frozen with this threshold (scripts/bench_host_step.py)."""
    global _gc_engines, _gc_thresholds
    with _gc_lock:
        if _gc_engines == 0:
            _gc_thresholds = gc.get_threshold()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *_gc_thresholds[1:])
        _gc_engines += 1
        gc.freeze()


def restore_gc() -> None:
    """Undo relax_gc for one engine: the heap unfrozen (a frozen reference cycle is never collected,
    so the engine's model would stay), the process's thresholds back once no engine runs."""
    global _gc_engines
    with _gc_lock:
        _gc_engines -= 1
        gc.unfreeze()
        if _gc_engines == 0:
            gc.set_threshold(*_gc_thresholds)


class BackgroundEngine:
    def __init__(self, core: EngineCore, handle_outputs: OutputHandler, handle_error: ErrorHandler):
        self.core = core
        self._handle_outputs = handle_outputs
        self._handle_error = handle_error
        self._commands: queue.Queue = queue.Queue()
        self._live: set[str] = set()  # request ids added and not yet finished
        self._stopped = threading.Event()
        self._running = True
        self.failure: Optional[BaseException] = None  # why the loop died, when not by shutdown
        relax_gc()
        self._thread = threading.Thread(target=self._run, name="tritium-engine", daemon=True)
        self._thread.start()

    # ---- thread-safe API ------------------------------------------------------------------
    def add_requests(self, requests: list[Request]) -> None:
        if self._stopped.is_set():
            raise RuntimeError("the engine has been shut down")
        self._commands.put(("add", requests))

    def abort(self, req_ids: Iterable[str]) -> None:
        self._commands.put(("abort", list(req_ids)))

    def shutdown(self, timeout: float = 30.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._commands.put(("stop", None))
        self._thread.join(timeout)
        restore_gc()
        if not self._thread.is_alive():  # give the model, KV cache and CUDA graphs back now
            self.core = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    @property
    def is_alive(self) -> bool:
        # A flag the loop clears on its way out, as EngineProcess.is_alive: Thread.is_alive()
        # waits for a lock, slow under load, and callers ask once or twice per request.
        return self._running

    # ---- what the front reads (also offered by EngineProcess) --------------------------------
    def scheduler_snapshot(self) -> SchedulerSnapshot:
        return SchedulerSnapshot.of(self.core.scheduler)

    def drain_stats(self) -> list[IterationStats]:
        return self.core.stats.drain()

    def stats_totals(self) -> EngineTotals:
        return self.core.stats.snapshot_totals()

    # ---- loop -----------------------------------------------------------------------------
    def _apply(self, kind: str, payload) -> None:
        if kind == "add":
            for request in payload:
                self._live.add(request.request_id)  # first, so a failing add fails this request too
                self.core.add_request(request)
        elif kind == "abort":
            self._emit(self.core.abort_requests(payload))

    def _emit(self, outputs: list[EngineCoreOutput]) -> None:
        for out in outputs:
            if out.finished:
                self._live.discard(out.req_id)
        to_abort = list(self._handle_outputs(outputs))
        if to_abort:
            aborted = self.core.abort_requests(to_abort)
            for out in aborted:
                self._live.discard(out.req_id)
            self._handle_outputs(aborted)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # also what is not an Exception (SystemExit) ends the thread
            self.failure = RuntimeError(f"the engine has stopped ({type(e).__name__}: {e})")
            raise
        finally:
            self._running = False

    def _loop(self) -> None:
        while not self._stopped.is_set():
            busy = self.core.has_unfinished_requests()
            wait = self.core.pacing_delay() if busy else 0.0  # late scheduling: arrivals join the next step
            try:
                if wait > 0:
                    kind, payload = self._commands.get(timeout=wait)
                else:
                    kind, payload = self._commands.get(block=not busy)
            except queue.Empty:
                kind, payload = "step", None
            if kind == "stop":
                break
            try:
                if kind == "step":  # only once every pending command is applied
                    self._emit(self.core.step())
                else:
                    self._apply(kind, payload)
            except Exception as exc:  # noqa: BLE001 - fail the in-flight requests, keep serving
                logger.exception("engine %s failed; failing %d in-flight requests", kind, len(self._live))
                failed = sorted(self._live)
                self.core.discard_in_flight()
                self.core.abort_requests(failed)
                self._live.clear()
                self._handle_error(exc, failed)
        self._fail_pending()

    def _fail_pending(self) -> None:
        """After shutdown: requests in flight or still queued end with an error, not a hang."""
        pending = set(self._live)
        while True:
            try:
                kind, payload = self._commands.get_nowait()
            except queue.Empty:
                break
            if kind == "add":
                pending.update(r.request_id for r in payload)
        self._live.clear()
        if pending:
            self._handle_error(RuntimeError("the engine was shut down before the request finished"),
                               sorted(pending))
