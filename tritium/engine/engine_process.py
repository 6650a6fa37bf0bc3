"""The engine's step loop in a process of its own (`LLM(engine_process=True)`, `tritium serve`).

Why: in one process the step loop shares the GIL with the front (detokenizing, the HTTP server's
per-token JSON and socket writes). At hundreds of streams the front's work delays every step
(measured on an H200 at 512 streams with the same client: 62% of the engine's offline throughput
with the loop in a thread, 86% in its own process). There the loop launches the GPU's next step
whatever the front does.

The child builds the engine (build_engine) and runs the same BackgroundEngine loop; one duplex
pipe carries pickled messages:
  front -> engine: ("add", [Request]), ("abort", [ids]), ("call", id, name, args), ("stop",)
  engine -> front: ("ready", EngineInfo) | ("failed", exc) once, then ("outputs", [EngineCoreOutput],
                   SchedulerSnapshot), ("error", exc, [ids]), ("reply", id, ok, value)
Stop strings are found in the front, so their abort reaches the engine a step later (the extra
token is dropped by the front). If the engine process dies, its requests fail with an error
naming its exit code and `is_alive` turns False; if the front dies, the child sees the pipe
close and exits (it never outlives its front holding the GPU).
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing
import pickle
import signal
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from tritium.core.request import Request
from tritium.core.sched_output import EngineCoreOutput
from tritium.engine.background import relax_gc, restore_gc
from tritium.engine.stats import EngineTotals, IterationStats, SchedulerSnapshot

logger = logging.getLogger(__name__)

OutputHandler = Callable[[list[EngineCoreOutput]], Iterable[str]]
ErrorHandler = Callable[[BaseException, list[str]], None]


@dataclass
class EngineInfo:
    """What the front needs to know of the engine built in the child (all picklable)."""
    model_config: Any
    scheduler_config: Any
    kv_plan: Any
    quant_config: Any
    device: Any
    startup_seconds: dict[str, float]


class _Channel:
    """One end of the pipe: pickled messages, sends serialized by a lock (several threads send)."""

    def __init__(self, conn):
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, *msg) -> None:
        self.send_pickled(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))

    def send_pickled(self, data: bytes) -> None:
        with self._lock:
            self.conn.send_bytes(data)

    def recv(self) -> tuple:
        return pickle.loads(self.conn.recv_bytes())


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(f"{type(exc).__name__}: {exc}")


# ---- the child ------------------------------------------------------------------------------------
def _child_main(conn, build_kwargs: dict[str, Any], log_level: int) -> None:
    # Ctrl-C and a SIGTERM sent to the whole process group reach the front too, which drains its
    # requests and then stops us: we end when it says so or when its end of the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="[tritium engine] %(asctime)s %(levelname)s %(message)s")
    logging.getLogger("tritium").setLevel(log_level)
    channel = _Channel(conn)
    from tritium.engine.background import BackgroundEngine
    from tritium.engine.factory import build_engine

    try:
        parts = build_engine(**build_kwargs)
    except BaseException as e:  # noqa: BLE001 - handed to the front, which raises it
        logger.exception("engine build failed")
        channel.send("failed", _portable(e))
        return

    def on_outputs(outputs):
        if outputs:
            channel.send("outputs", outputs, SchedulerSnapshot.of(parts.core.scheduler))
        return ()  # aborts (stop strings) come back from the front as commands

    def on_error(exc, ids):
        channel.send("error", _portable(exc), ids)

    engine = BackgroundEngine(parts.core, on_outputs, on_error)
    calls = {"drain_stats": engine.drain_stats, "stats_totals": engine.stats_totals,
             "save": lambda engine_dir, build_config: _save(parts, engine_dir, build_config)}
    channel.send("ready", EngineInfo(parts.model_config, parts.scheduler_config, parts.kv_plan,
                                     parts.quant_config, parts.device, dict(parts.startup_seconds)))
    try:
        while True:
            try:
                msg = channel.recv()
            except (EOFError, OSError):  # the front is gone
                break
            kind = msg[0]
            if kind == "add":
                engine.add_requests(msg[1])
            elif kind == "abort":
                engine.abort(msg[1])
            elif kind == "call":
                _, call_id, name, args = msg
                try:
                    channel.send("reply", call_id, True, calls[name](*args))
                except Exception as e:  # noqa: BLE001 - the caller gets it
                    channel.send("reply", call_id, False, _portable(e))
            elif kind == "stop":
                logger.info("engine process: stopping")
                break
    finally:
        engine.shutdown()  # fails whatever is still in flight (sent to the front as errors)
    logger.info("engine process: stopped")


def _save(parts, engine_dir: str, build_config) -> None:
    from tritium.engine.engine_dir import engine_description
    from tritium.loader.saved_engine import save_engine

    save_engine(engine_dir, parts.model, engine_description(parts, build_config), parts.tokenizer)


# ---- the front ------------------------------------------------------------------------------------
class EngineProcess:
    """BackgroundEngine's interface over an engine in a child process. Construction starts the
    child; wait_ready() returns its EngineInfo (or raises its build error)."""

    def __init__(self, build_kwargs: dict[str, Any], handle_outputs: OutputHandler, handle_error: ErrorHandler):
        self._handle_outputs = handle_outputs
        self._handle_error = handle_error
        ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        self._channel = _Channel(parent_conn)
        level = logging.getLogger("tritium").getEffectiveLevel()
        self._process = ctx.Process(target=_child_main, args=(child_conn, build_kwargs, level),
                                    name="tritium-engine", daemon=True)
        self._process.start()
        child_conn.close()  # ours closed: the child's death reads as EOF here
        self._live: set[str] = set()
        self._lock = threading.Lock()  # guards _live and _calls (the reader thread and callers)
        self._join_lock = threading.Lock()  # one thread reaps the child (see _wait_exit)
        self._calls: dict[int, Future] = {}
        self._call_ids = itertools.count()
        self._snapshot = SchedulerSnapshot(0, 0, 0.0, 0)
        self._stopping = False
        self._closed = False  # the child's end of the pipe closed (it exited)
        # why the engine stopped, set once its in-flight requests have been failed with it (the
        # server's watchdog fails what is left with the same error)
        self.failure: Optional[BaseException] = None
        self._reader: Optional[threading.Thread] = None

    def wait_ready(self) -> EngineInfo:
        try:
            msg = self._channel.recv()
        except (EOFError, OSError):
            code = self._wait_exit(10)
            raise RuntimeError(f"the engine process exited (code {code}) while building the engine; its log "
                               "above says why") from None
        if msg[0] == "failed":
            self._wait_exit(10)
            raise msg[1]
        self._reader = threading.Thread(target=self._read, name="tritium-engine-reader", daemon=True)
        self._reader.start()
        relax_gc()  # this process handles every step's outputs too (BackgroundEngine's reason)
        return msg[1]

    # ---- BackgroundEngine's interface ----------------------------------------------------------
    def add_requests(self, requests: list[Request]) -> None:
        if not self.is_alive:
            raise RuntimeError("the engine has been shut down")
        try:
            data = pickle.dumps(("add", requests), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001 - e.g. a logits processor that cannot be pickled
            raise ValueError(f"the request cannot be sent to the engine process ({e}); run the engine "
                             "in this process (engine_process=False) for it") from None
        with self._lock:
            self._live.update(r.request_id for r in requests)
        self._channel.send_pickled(data)

    def abort(self, req_ids: Iterable[str]) -> None:
        ids = list(req_ids)
        if ids and not self._stopping:
            try:
                self._channel.send("abort", ids)
            except OSError:  # the engine is gone: its requests are failed by the reader
                pass

    def shutdown(self, timeout: float = 30.0) -> None:
        if self._stopping:
            return
        self._stopping = True
        try:
            self._channel.send("stop")
        except OSError:
            pass
        start = time.monotonic()
        if self._wait_exit(timeout) is None:
            logger.warning("the engine process did not stop within %.0f s: terminating it", timeout)
            self._process.terminate()
            self._wait_exit(5)
        else:
            logger.info("engine process stopped in %.1f s", time.monotonic() - start)
        if self._reader is not None:
            self._reader.join(5)
            restore_gc()
        self._channel.conn.close()

    @property
    def is_alive(self) -> bool:
        """Ready and not stopped, and the child's end of the pipe still open."""
        # Flags only: Thread.is_alive() waits for a lock, ~0.3 ms a call under load in a cProfile
        # of the server, and callers ask once or twice per request.
        return self._reader is not None and not (self._stopping or self._closed)

    def _wait_exit(self, timeout: float) -> Optional[int]:
        """The child's exit code once it has exited within `timeout`, else None. One thread at a
        time: two threads reaping the same child race (one gets ECHILD and would read it as alive)."""
        with self._join_lock:
            self._process.join(timeout)
            return self._process.exitcode

    def scheduler_snapshot(self) -> SchedulerSnapshot:
        return self._snapshot  # as of the engine's last step

    def drain_stats(self) -> list[IterationStats]:
        return self.call("drain_stats")

    def stats_totals(self) -> EngineTotals:
        return self.call("stats_totals")

    def call(self, name: str, *args, timeout: Optional[float] = None):
        """Run one of the child's calls (drain_stats, stats_totals, save) and return its result."""
        future: Future = Future()
        with self._lock:
            call_id = next(self._call_ids)
            self._calls[call_id] = future
        try:
            self._channel.send("call", call_id, name, args)
        except OSError:
            with self._lock:
                self._calls.pop(call_id, None)
            raise RuntimeError("the engine process has stopped") from None
        return future.result(timeout)

    # ---- the reader thread ---------------------------------------------------------------------
    def _read(self) -> None:
        try:
            self._read_messages()
        finally:  # the pipe closed, or handing on outputs failed: either way this engine is gone
            self._fail_all()

    def _read_messages(self) -> None:
        while True:
            try:
                msg = self._channel.recv()
            except (EOFError, OSError):
                break
            kind = msg[0]
            if kind == "outputs":
                outputs, self._snapshot = msg[1], msg[2]
                with self._lock:
                    self._live.difference_update(o.req_id for o in outputs if o.finished)
                to_abort = list(self._handle_outputs(outputs))
                if to_abort:
                    self.abort(to_abort)
            elif kind == "error":
                exc, ids = msg[1], msg[2]
                with self._lock:
                    self._live.difference_update(ids)
                self._handle_error(exc, ids)
            elif kind == "reply":
                _, call_id, ok, value = msg
                with self._lock:
                    future = self._calls.pop(call_id, None)
                if future is not None:
                    future.set_result(value) if ok else future.set_exception(value)

    def _fail_all(self) -> None:
        """The pipe closed: fail what was still in flight and every waiting call."""
        self._closed = True  # before anyone hears of it: is_alive is already False then
        code = self._wait_exit(5)
        if self._stopping:
            exc = RuntimeError("the engine was shut down before the request finished")
        else:
            exc = RuntimeError(f"the engine process exited unexpectedly (exit code {code})")
            logger.error("%s", exc)
        with self._lock:
            failed, self._live = sorted(self._live), set()
            calls, self._calls = list(self._calls.values()), {}
        if failed:
            self._handle_error(exc, failed)
        for future in calls:
            future.set_exception(exc)
        self.failure = exc
