"""The server's engine watchdog against fake engines: when an engine process dies, the open
requests end with the engine's own account of it (its exit code), even when the watchdog notices
first; an engine thread that stops gives no account and its requests end at once."""
from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

from tritium.entrypoints.openai.api_server import Health, ServerConfig, ServerState
from tritium.entrypoints.openai.metrics import ServerMetrics


class _Tracker:
    num_in_flight = 2

    def __init__(self):
        self.failed_with = []

    def fail_all(self, exc):
        self.failed_with.append(exc)


def _watch(engine) -> tuple[ServerState, _Tracker, float]:
    tracker = _Tracker()
    state = ServerState(config=ServerConfig(load_llm=lambda: None, served_model_name="m"),
                        metrics=ServerMetrics("m"), health=Health.READY,
                        llm=SimpleNamespace(_engine=engine), tracker=tracker)
    start = time.monotonic()
    asyncio.run(asyncio.wait_for(state._watch_engine(), timeout=20))
    return state, tracker, time.monotonic() - start


def test_a_dead_engine_process_fails_requests_with_its_own_account():
    engine = SimpleNamespace(is_alive=False, failure=None)  # the pipe closed; the child not yet reaped
    exit_error = RuntimeError("the engine process exited unexpectedly (exit code -9)")
    threading.Timer(0.5, lambda: setattr(engine, "failure", exit_error)).start()
    state, tracker, seconds = _watch(engine)
    assert tracker.failed_with == [exit_error]  # not a vaguer error of the watchdog's own
    assert state.health is Health.DEAD and state.exit_code == 1
    assert 0.4 < seconds < 5


def test_a_stopped_engine_thread_fails_requests_at_once():
    state, tracker, seconds = _watch(SimpleNamespace(is_alive=False))
    assert [str(e) for e in tracker.failed_with] == ["the engine has stopped"]
    assert state.health is Health.DEAD and state.exit_code == 1 and seconds < 0.5
