"""The engine in its own process (LLM(engine_process=True)): what only that mode has. Tokens vs
Hugging Face, its build errors, saving through it, statistics, requests it cannot take, and
its death or shutdown failing the requests in flight (never a hang). The LLM API's behaviour
in this mode is covered by test_llm_api.py, which runs every test in both modes."""
from __future__ import annotations

import asyncio
import os
import signal

import pytest
import torch

from tests.utils.tiny_models import make_tiny_checkpoint
from tritium import SamplingParams
from tritium.llm.llm import LLM

PROMPTS = [[5, 17, 42, 99], [7, 7, 3], [200, 11, 31, 4, 8, 90]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return make_tiny_checkpoint("llama", tmp_path_factory.mktemp("tiny_engine_process"))


@pytest.fixture(scope="module")
def llm(tiny):
    with LLM(tiny, dtype="float32", max_seq_len=256, engine_process=True) as llm:
        yield llm


def _hf_greedy(path: str, prompt: list[int], n: int) -> list[int]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[0, len(prompt):].tolist()


def test_greedy_tokens_match_hugging_face(llm, tiny):
    outs = llm.generate(PROMPTS, SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))
    for prompt, out in zip(PROMPTS, outs):
        assert out.outputs[0].token_ids == _hf_greedy(tiny, prompt, 12)
    assert llm._engine.is_alive and os.getpid() != llm._engine._process.pid


def test_statistics_and_scheduler_snapshot_come_from_the_child(llm):
    llm.get_stats()  # drain what earlier tests left
    before = llm.get_stats_totals()
    llm.generate(PROMPTS[0], SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))
    stats = llm.get_stats()
    assert sum(s.num_generation_tokens for s in stats) == 5
    assert sum(s.num_prompt_tokens for s in stats) == len(PROMPTS[0])
    assert llm.get_stats_totals().num_generation_tokens == before.num_generation_tokens + 5
    snap = llm._engine.scheduler_snapshot()
    assert snap.num_running == 0 and snap.num_waiting == 0 and snap.kv_cache_usage == 0.0


def test_save_from_the_child_then_load_in_process(llm, tmp_path):
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    expected = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params)]
    llm.save(str(tmp_path / "engine"))
    with LLM(str(tmp_path / "engine")) as reloaded:
        assert [o.outputs[0].token_ids for o in reloaded.generate(PROMPTS, params)] == expected


def test_requests_it_cannot_take_are_refused_and_others_continue(llm):
    with pytest.raises(ValueError, match="logits_processor.*engine_process"):
        llm.generate(PROMPTS[0], SamplingParams(max_tokens=3, logits_processor=lambda *a: None))
    assert llm._processor._parents == {}  # nothing left registered
    out = llm.generate(PROMPTS[0], SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True))
    assert len(out.outputs[0].token_ids) == 3


def test_build_errors_reach_the_caller(tiny):
    with pytest.raises(ValueError, match="max_seq_len=100000 does not fit"):
        LLM(tiny, dtype="float32", max_seq_len=100000, engine_process=True,
            kv_cache_config={"max_tokens": 1024})
    with pytest.raises(ValueError, match="batched_logits_processor"):
        LLM(tiny, engine_process=True, batched_logits_processor=lambda *a: None)


def test_engine_process_death_fails_in_flight_requests(tiny):
    llm = LLM(tiny, dtype="float32", max_seq_len=256, engine_process=True)

    async def run():
        stream = llm.generate_async(PROMPTS[0], SamplingParams(max_tokens=240, ignore_eos=True), streaming=True)
        got = 0
        with pytest.raises(RuntimeError, match=r"engine process exited unexpectedly \(exit code -9\)"):
            async for _ in stream:
                got += 1
                if got == 1:
                    os.kill(llm._engine._process.pid, signal.SIGKILL)
        return got

    assert asyncio.run(run()) >= 1
    assert not llm._engine.is_alive
    with pytest.raises(RuntimeError, match="shut down"):
        llm.generate(PROMPTS[0], SamplingParams(max_tokens=2))
    llm.shutdown()


def test_the_front_relaxes_its_collector_while_the_engine_process_runs(tiny):
    """The front handles every step's outputs as well: its start-up heap is frozen and young objects
    are collected less often until shutdown, as in an engine's own process."""
    import gc

    from tritium.engine.background import GC_YOUNG_THRESHOLD

    before = gc.get_threshold()
    llm = LLM(tiny, dtype="float32", max_seq_len=256, engine_process=True)
    assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    assert llm.generate(PROMPTS[0], SamplingParams(max_tokens=3, ignore_eos=True)).outputs[0].token_ids
    llm.shutdown()
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


def test_shutdown_fails_requests_still_in_flight(tiny, caplog):
    for _ in range(3):  # the child's exit is seen by two threads: once raced into a false "did not stop"
        llm = LLM(tiny, dtype="float32", max_seq_len=256, engine_process=True)
        stream = llm.generate_async(PROMPTS[0], SamplingParams(max_tokens=240, ignore_eos=True), streaming=True)
        with caplog.at_level("INFO", logger="tritium.engine.engine_process"):
            llm.shutdown()
        with pytest.raises(RuntimeError, match="shut down before the request finished"):
            stream.result(timeout=30)
        assert llm._engine._process.exitcode == 0 and not llm._engine.is_alive
        assert "engine process stopped in" in caplog.text and "did not stop" not in caplog.text
