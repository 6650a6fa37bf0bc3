"""GenerationStream on its own: items put from another thread, consumed by async iteration."""
from __future__ import annotations

import asyncio
import threading

import pytest

from tritium.llm.generation_stream import GenerationStream
from tritium.outputs import CompletionOutput, RequestOutput


def snap(text: str, finished: bool) -> RequestOutput:
    return RequestOutput(request_id="0", prompt="p", prompt_token_ids=[1],
                         outputs=[CompletionOutput(index=0, text=text)], finished=finished)


def feed(stream: GenerationStream, items) -> threading.Thread:
    t = threading.Thread(target=lambda: [stream.put(i) for i in items])
    t.start()
    return t


def test_async_iteration_then_aresult_returns_the_final_output():
    stream = GenerationStream("0", lambda _: None)
    feed(stream, [snap("a", False), snap("ab", True)]).join()

    async def run():
        texts = [o.outputs[0].text async for o in stream]
        return texts, await asyncio.wait_for(stream.aresult(), timeout=5)

    texts, final = asyncio.run(run())
    assert texts == ["a", "ab"]
    assert final.finished and final.outputs[0].text == "ab"
    # A later loop (a second asyncio.run) gets the result too, and so does result().
    assert asyncio.run(asyncio.wait_for(stream.aresult(), timeout=5)) is final
    assert stream.result(timeout=1) is final


def test_error_is_raised_again_to_a_later_consumer():
    stream = GenerationStream("0", lambda _: None)
    feed(stream, [snap("a", False), RuntimeError("engine failed")]).join()

    async def run():
        return [o async for o in stream]

    with pytest.raises(RuntimeError, match="engine failed"):
        asyncio.run(run())
    with pytest.raises(RuntimeError, match="engine failed"):
        asyncio.run(asyncio.wait_for(stream.aresult(), timeout=5))


def test_items_put_while_iterating_arrive_in_order():
    stream = GenerationStream("0", lambda _: None)
    items = [snap("x" * i, False) for i in range(1, 50)] + [snap("end", True)]

    async def run():
        t = feed(stream, items)
        got = [o.outputs[0].text async for o in stream]
        t.join()
        return got

    assert asyncio.run(asyncio.wait_for(run(), timeout=10)) == [i.outputs[0].text for i in items]


def test_put_after_the_consuming_loop_closed_does_not_raise():
    # The engine thread puts into the stream; a consumer that stopped early and whose event loop is
    # gone must not make put() raise (that would fail the engine step, and every request in it).
    stream = GenerationStream("0", lambda _: None)
    stream.put(snap("a", False))

    async def first():
        async for o in stream:
            return o

    assert asyncio.run(first()).outputs[0].text == "a"
    stream.put(snap("ab", False))
    stream.put(snap("abc", True))
    assert stream.result(timeout=1).outputs[0].text == "abc"
