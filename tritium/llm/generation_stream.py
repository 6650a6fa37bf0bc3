"""GenerationStream: what `LLM.generate_async` returns.

Fed from the engine thread; consumed with `async for`, `await stream` (or `stream.aresult()`) or
the blocking `stream.result()`. Each item is a RequestOutput snapshot (cumulative text, with
`text_diff` holding what is new since the item before); the last one has finished=True. A consumer
slower than the engine gets fewer snapshots, each with the diffs of the steps it missed.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from typing import Callable, Optional

from tritium.outputs import RequestOutput


_batch = threading.local()


@contextlib.contextmanager
def batched_wakeups():
    """Streams fed inside this block wake their asyncio consumers together at its end: one
    call_soon_threadsafe (a self-pipe write, a GIL hand-over) per event loop and engine step
    instead of one per stream, which at hundreds of streams cost more than the step itself."""
    _batch.pending = pending = {}
    try:
        yield
    finally:
        _batch.pending = None
        for loop, events in pending.items():
            _wake(loop, events)


def _wake(loop: asyncio.AbstractEventLoop, events: list) -> None:
    try:
        loop.call_soon_threadsafe(_set_all, events)
    except RuntimeError:  # that loop is closed: its consumer stopped early and is gone
        pass


def _set_all(events: list) -> None:
    for event in events:
        event.set()


def _absorb(older: RequestOutput, newer: RequestOutput) -> RequestOutput:
    """`newer` (cumulative text / tokens) with each completion's diffs extended to also hold
    what `older` added: one snapshot as if the consumer had skipped `older`."""
    before = {c.index: c for c in older.outputs}
    for c in newer.outputs:
        prev = before.get(c.index)
        if prev is not None:
            c.text_diff = prev.text_diff + c.text_diff
            c.token_ids_diff = prev.token_ids_diff + c.token_ids_diff
    return newer


class GenerationStream:
    def __init__(self, request_id: str, abort: Callable[[str], None]):
        self.request_id = request_id
        self._abort = abort
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._wakeup: Optional[asyncio.Event] = None
        self._final: Optional[RequestOutput] = None
        self._error: Optional[BaseException] = None

    # Called on the engine thread.
    def put(self, item) -> None:
        with self._cond:
            last = self._items[-1] if self._items else None
            if isinstance(item, RequestOutput) and isinstance(last, RequestOutput) and not last.finished:
                # The consumer has not taken the previous snapshot yet (it lags behind the engine):
                # hand it one snapshot carrying both steps' diffs instead of two, so that a loaded
                # server writes one chunk where it would write two (vLLM's output collector does the same).
                self._items[-1] = _absorb(last, item)
            else:
                self._items.append(item)
            if isinstance(item, BaseException):
                self._error = item
            elif item.finished:
                self._final = item
            self._cond.notify_all()
            loop, wakeup = self._loop, self._wakeup
        if loop is None:
            return
        pending = getattr(_batch, "pending", None)
        if pending is not None:
            pending.setdefault(loop, []).append(wakeup)
        else:
            _wake(loop, [wakeup])

    @property
    def finished(self) -> bool:
        return self._final is not None or self._error is not None

    def abort(self) -> None:
        """Stop generating; the stream ends with finish_reason 'abort'."""
        self._abort(self.request_id)

    def __aiter__(self):
        return self._iterate()

    async def _iterate(self):
        # Bound to the loop iterating now: a stream may be consumed again later, in another loop.
        wakeup = asyncio.Event()
        with self._cond:
            self._loop, self._wakeup = asyncio.get_running_loop(), wakeup
        while True:
            with self._cond:
                item = self._items.popleft() if self._items else None
                done = self.finished
            if item is None:
                if done:  # an earlier iteration consumed the end
                    if self._error is not None:
                        raise self._error
                    return
                await wakeup.wait()
                wakeup.clear()
                continue
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.finished:
                return

    async def aresult(self) -> RequestOutput:
        async for _ in self:
            pass
        return self._final

    def __await__(self):
        """`output = await llm.generate_async(...)`: the final output (TensorRT-LLM's form)."""
        return self.aresult().__await__()

    def result(self, timeout: Optional[float] = None) -> RequestOutput:
        with self._cond:
            if not self._cond.wait_for(lambda: self.finished, timeout):
                raise TimeoutError(f"request {self.request_id} did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._final
