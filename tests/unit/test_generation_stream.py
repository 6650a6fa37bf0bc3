"""GenerationStream on its own: items put from another thread, consumed by async iteration."""
from __future__ import annotations

import asyncio
import threading

import pytest

from tritium.llm.generation_stream import GenerationStream
from tritium.outputs import CompletionOutput, RequestOutput


def snap(text: str, finished: bool, before: str = "") -> RequestOutput:
    """A snapshot whose text is `text`, the previous one's `before` (its diffs: what was added)."""
    new = text[len(before):]
    return RequestOutput(request_id="0", prompt="p", prompt_token_ids=[1],
                         outputs=[CompletionOutput(index=0, text=text, token_ids=[ord(ch) for ch in text],
                                                   text_diff=new, token_ids_diff=[ord(ch) for ch in new])],
                         finished=finished)


def feed(stream: GenerationStream, items) -> threading.Thread:
    t = threading.Thread(target=lambda: [stream.put(i) for i in items])
    t.start()
    return t


def test_async_iteration_then_aresult_returns_the_final_output():
    stream = GenerationStream("0", lambda _: None)
    feed(stream, [snap("a", False), snap("ab", True, "a")]).join()

    async def run():
        texts = [(o.outputs[0].text, o.outputs[0].text_diff) async for o in stream]
        return texts, await asyncio.wait_for(stream.aresult(), timeout=5)

    texts, final = asyncio.run(run())
    assert texts == [("ab", "ab")]  # both were queued before the consumer came: one snapshot, both diffs
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
    texts = ["x" * i for i in range(1, 50)] + ["x" * 49 + "end"]
    items = [snap(t, i == len(texts) - 1, texts[i - 1] if i else "") for i, t in enumerate(texts)]

    async def run():
        t = feed(stream, items)
        got = [o async for o in stream]
        t.join()
        return got

    got = asyncio.run(asyncio.wait_for(run(), timeout=10))
    # In order, none lost: whatever the consumer skipped arrives in the next snapshot's diffs.
    seen = [o.outputs[0].text for o in got]
    assert seen == sorted(seen, key=texts.index) and seen[-1] == texts[-1] and got[-1].finished
    assert "".join(o.outputs[0].text_diff for o in got) == texts[-1]
    assert [t for o in got for t in o.outputs[0].token_ids_diff] == [ord(ch) for ch in texts[-1]]


def test_put_after_the_consuming_loop_closed_does_not_raise():
    # The engine thread puts into the stream; a consumer that stopped early and whose event loop is
    # gone must not make put() raise (that would fail the engine step, and every request in it).
    stream = GenerationStream("0", lambda _: None)
    stream.put(snap("a", False))

    async def first():
        async for o in stream:
            return o

    assert asyncio.run(first()).outputs[0].text == "a"
    stream.put(snap("ab", False, "a"))
    stream.put(snap("abc", True, "ab"))
    final = stream.result(timeout=1)
    assert final.outputs[0].text == "abc" and final.outputs[0].text_diff == "bc"


def test_a_lagging_consumer_gets_merged_diffs_and_errors_stay_separate():
    stream = GenerationStream("0", lambda _: None)
    for before, text in (("", "He"), ("He", "Hell"), ("Hell", "Hello")):
        stream.put(snap(text, False, before))
    stream.put(RuntimeError("engine failed"))

    async def run():
        got = []
        with pytest.raises(RuntimeError, match="engine failed"):
            async for o in stream:
                got.append(o)
        return got

    (merged,) = asyncio.run(run())
    c = merged.outputs[0]
    assert (c.text, c.text_diff, c.token_ids_diff) == ("Hello", "Hello", [ord(ch) for ch in "Hello"])


def test_batched_wakeups_wake_every_consumer_with_one_call_per_loop():
    from tritium.llm.generation_stream import batched_wakeups

    streams = [GenerationStream(str(i), lambda _: None) for i in range(50)]

    async def run():
        loop = asyncio.get_running_loop()
        calls = []
        real = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *a: (calls.append(a), real(*a))[1]
        consumers = [asyncio.ensure_future(s.aresult()) for s in streams]
        await asyncio.sleep(0.05)  # every consumer waits on its stream

        def engine_step():
            with batched_wakeups():
                for i, s in enumerate(streams):
                    s.put(snap(f"text {i}", True))

        await asyncio.to_thread(engine_step)
        finals = await asyncio.wait_for(asyncio.gather(*consumers), timeout=5)
        return calls, finals

    calls, finals = asyncio.run(run())
    assert [f.outputs[0].text for f in finals] == [f"text {i}" for i in range(50)]
    from tritium.llm.generation_stream import _set_all

    assert [c[0] for c in calls].count(_set_all) == 1  # one wake-up call for the 50 streams, not 50
