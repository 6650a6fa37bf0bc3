"""The server's engine watchdog against fake engines: when an engine process dies, the open
requests end with the engine's own account of it (its exit code), even when the watchdog notices
first; a dead engine thread's account is there at once, and so are its requests ended."""
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
    dead_thread = SimpleNamespace(is_alive=False, failure=RuntimeError("the engine has stopped"))
    state, tracker, seconds = _watch(dead_thread)
    assert [str(e) for e in tracker.failed_with] == ["the engine has stopped"]
    assert state.health is Health.DEAD and state.exit_code == 1 and seconds < 0.5


def test_an_engine_that_gives_no_account_in_time_gets_a_generic_error(monkeypatch):
    from tritium.entrypoints.openai import api_server

    monkeypatch.setattr(api_server, "_ENGINE_FAILURE_WAIT_S", 0.3)
    state, tracker, seconds = _watch(SimpleNamespace(is_alive=False, failure=None))
    assert [str(e) for e in tracker.failed_with] == ["the engine has stopped"]
    assert state.health is Health.DEAD and 0.25 < seconds < 2
