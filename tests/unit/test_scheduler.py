import ast
import pathlib
import random

import pytest

from tritium.config import CacheConfig, ResolvedSchedulerConfig
from tritium.core.request import Request, RequestStatus
from tritium.core.sched_output import ModelRunnerOutput, TopLogprobs
from tritium.core.scheduler import Scheduler
from tritium.sampling_params import SamplingParams

from tests.unit.fake_runner import FakeRunner, toy_model

EOS = 0


def make(budget=64, max_seqs=8, max_len=64, chunked=True, num_blocks=16, block_size=4, caching=True):
    sched = Scheduler(
        ResolvedSchedulerConfig(max_num_seqs=max_seqs, max_num_batched_tokens=budget, max_model_len=max_len,
                                enable_chunked_prefill=chunked),
        CacheConfig(block_size=block_size, num_blocks=num_blocks, enable_prefix_caching=caching))
    return sched, FakeRunner(block_size)


def req(req_id, prompt, max_tokens=8, **params) -> Request:
    return Request(req_id, prompt, SamplingParams(max_tokens=max_tokens, **params), eos_token_ids=(EOS,))


def step(sched, runner, tokens=None):
    so = sched.schedule()
    outs = sched.update_from_output(so, runner.execute(so, tokens))
    sched.kv_cache_manager.check_integrity()
    return so, outs


def summary(so):
    """(new req ids, cached req ids, num_scheduled_tokens) of a SchedulerOutput."""
    return ([r.req_id for r in so.scheduled_new_reqs], [r.req_id for r in so.scheduled_cached_reqs],
            so.num_scheduled_tokens)


def test_core_imports_no_torch():
    core = pathlib.Path(__file__).parents[2] / "tritium" / "core"
    for path in core.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] != "torch", f"{path.name} imports {name}"
                assert name != "tritium.config" or path.name == "scheduler.py", f"{path.name} imports {name}"


# ---- chunked prefill -----------------------------------------------------------------------

def test_chunked_prefill_step_by_step():
    sched, runner = make(budget=4)
    a = req("a", list(range(1, 11)), max_tokens=2)
    sched.add_request(a)
    assert a.status == RequestStatus.WAITING and sched.num_waiting == 1

    so, outs = step(sched, runner)
    assert summary(so) == (["a"], [], {"a": 4})
    new = so.scheduled_new_reqs[0]
    assert (new.token_ids, new.num_prompt_tokens, new.block_ids, new.num_computed_tokens) == \
        (list(range(1, 11)), 10, [0], 0)
    assert outs == [] and a.num_computed_tokens == 4 and a.status == RequestStatus.RUNNING

    so, outs = step(sched, runner)
    assert summary(so) == ([], ["a"], {"a": 4})
    assert (so.scheduled_cached_reqs[0].new_block_ids, so.scheduled_cached_reqs[0].num_computed_tokens) == ([1], 4)
    assert outs == []

    so, outs = step(sched, runner, {"a": 50})
    assert summary(so) == ([], ["a"], {"a": 2})
    assert (so.scheduled_cached_reqs[0].new_block_ids, so.scheduled_cached_reqs[0].num_computed_tokens) == ([2], 8)
    assert [(o.req_id, o.new_token_ids, o.finish_reason) for o in outs] == [("a", [50], None)]

    so, outs = step(sched, runner, {"a": 51})
    assert summary(so) == ([], ["a"], {"a": 1})
    assert (so.scheduled_cached_reqs[0].new_block_ids, so.scheduled_cached_reqs[0].num_computed_tokens) == ([], 10)
    assert [(o.new_token_ids, o.finish_reason) for o in outs] == [([51], "length")]
    assert a.output_token_ids == [50, 51] and a.status == RequestStatus.FINISHED_LENGTH
    assert not sched.has_unfinished_requests() and sched.kv_cache_manager.num_free_blocks == 16

    so = sched.schedule()
    assert so.is_empty and so.finished_req_ids == {"a"}
    assert sched.schedule().finished_req_ids == set()


def test_chunked_prefill_shares_budget_running_first():
    sched, runner = make(budget=6)
    sched.add_request(req("a", [1, 2, 3, 4, 5]))
    sched.add_request(req("b", [6, 7, 8, 9, 10]))
    so, _ = step(sched, runner)
    assert summary(so) == (["a", "b"], [], {"a": 5, "b": 1})
    assert [r.block_ids for r in so.scheduled_new_reqs] == [[0, 1], [2]]
    so, _ = step(sched, runner)
    assert summary(so) == ([], ["a", "b"], {"a": 1, "b": 4})
    assert [(c.new_block_ids, c.num_computed_tokens) for c in so.scheduled_cached_reqs] == [([], 5), ([3], 1)]
    so, _ = step(sched, runner)
    assert summary(so) == ([], ["a", "b"], {"a": 1, "b": 1})
    assert [(c.new_block_ids, c.num_computed_tokens) for c in so.scheduled_cached_reqs] == [([], 6), ([], 5)]


def test_without_chunked_prefill_whole_prompt_must_fit_and_fcfs_holds():
    sched, runner = make(budget=10, max_len=10, chunked=False)
    sched.add_request(req("a", [1] * 6))
    sched.add_request(req("b", [2] * 5))  # 5 > 4 left: waits
    sched.add_request(req("c", [3] * 2))  # would fit, but must not overtake b
    so, _ = step(sched, runner)
    assert summary(so) == (["a"], [], {"a": 6})
    assert sched.num_waiting == 2
    so, _ = step(sched, runner)
    assert summary(so) == (["b", "c"], ["a"], {"a": 1, "b": 5, "c": 2})


def test_max_num_seqs():
    sched, runner = make(max_seqs=2)
    for name in "abc":
        sched.add_request(req(name, [ord(name)] * 3, max_tokens=2))
    so, _ = step(sched, runner)
    assert summary(so) == (["a", "b"], [], {"a": 3, "b": 3})
    assert (sched.num_running, sched.num_waiting) == (2, 1)
    so, outs = step(sched, runner)
    assert summary(so)[2] == {"a": 1, "b": 1}
    assert [o.finish_reason for o in outs] == ["length", "length"]
    so, _ = step(sched, runner)
    assert summary(so) == (["c"], [], {"c": 3})
    assert so.finished_req_ids == {"a", "b"}


# ---- preemption ----------------------------------------------------------------------------

def test_preempt_last_running_then_resume_with_outputs():
    sched, runner = make(num_blocks=4, block_size=2)
    a = req("a", [1, 2, 3, 4], max_tokens=3)
    b = req("b", [5, 6, 7, 8])
    sched.add_request(a)
    sched.add_request(b)
    so, _ = step(sched, runner, {"a": 11, "b": 21})
    assert [r.block_ids for r in so.scheduled_new_reqs] == [[0, 1], [2, 3]]
    assert sched.kv_cache_manager.num_free_blocks == 0

    # a needs a third block: b (last running) is preempted, its blocks freed tail first.
    so, _ = step(sched, runner, {"a": 12})
    assert summary(so) == ([], ["a"], {"a": 1})
    assert so.scheduled_cached_reqs[0].new_block_ids == [3]
    assert so.finished_req_ids == {"b"}
    assert (b.status, b.num_computed_tokens, b.num_preemptions) == (RequestStatus.PREEMPTED, 0, 1)
    assert list(sched.waiting) == [b] and sched.running == [a]
    assert [x.block_id for x in sched.kv_cache_manager.block_pool.free_queue] == [2]

    # b's first block is still cached, but b needs 2 more blocks and none is free: it waits.
    so, outs = step(sched, runner, {"a": 13})
    assert summary(so) == ([], ["a"], {"a": 1}) and so.finished_req_ids == set()
    assert [(o.req_id, o.finish_reason) for o in outs] == [("a", "length")]

    # a finished: b resumes as a new request with its output token, hitting its own block 2.
    so, _ = step(sched, runner, {"b": 22})
    assert summary(so) == (["b"], [], {"b": 3})
    new = so.scheduled_new_reqs[0]
    assert (new.token_ids, new.num_prompt_tokens, new.block_ids, new.num_computed_tokens) == \
        ([5, 6, 7, 8, 21], 4, [2, 3, 1], 2)
    assert so.finished_req_ids == {"a"}
    assert b.num_cached_tokens == 0  # set at first scheduling only
    assert b.output_token_ids == [21, 22] and b.status == RequestStatus.RUNNING


def test_preemption_order_and_self_preemption():
    sched, runner = make(num_blocks=5, block_size=2)
    sched.add_request(req("a", [1, 2, 3, 4]))
    sched.add_request(req("b", [5, 6, 7, 8]))
    sched.add_request(req("c", [9, 10]))
    so, _ = step(sched, runner)
    assert [r.block_ids for r in so.scheduled_new_reqs] == [[0, 1], [2, 3], [4]]
    # Every request needs a new block. a takes c's; b, now last, preempts itself.
    so, _ = step(sched, runner)
    assert summary(so) == ([], ["a"], {"a": 1})
    assert so.scheduled_cached_reqs[0].new_block_ids == [4]
    assert so.finished_req_ids == {"b", "c"}
    assert [r.request_id for r in sched.waiting] == ["b", "c"]
    assert [r.request_id for r in sched.running] == ["a"]
    assert [sched.requests[i].num_preemptions for i in "bc"] == [1, 1]
    assert sched.num_preemptions_total == 2


def test_no_admission_in_a_step_that_preempted():
    sched, runner = make(budget=2, num_blocks=4, block_size=2, caching=False)
    sched.add_request(req("a", [2, 2, 4]))
    sched.add_request(req("b", [2, 4, 3, 4]))
    assert [summary(step(sched, runner)[0])[2] for _ in range(3)] == \
        [{"a": 2}, {"a": 1, "b": 1}, {"a": 1, "b": 1}]
    kv = sched.kv_cache_manager
    assert (kv.get_block_ids("a"), kv.get_block_ids("b")) == ([0, 1], [2])
    # a takes the last free block, b then preempts itself. One token of budget is left and b's
    # freed block could hold a 1-token chunk, but admitting now would only thrash.
    so, _ = step(sched, runner)
    assert summary(so) == ([], ["a"], {"a": 1}) and so.finished_req_ids == {"b"}
    assert so.scheduled_cached_reqs[0].new_block_ids == [3]
    assert [r.request_id for r in sched.waiting] == ["b"]
    so, _ = step(sched, runner)
    assert summary(so) == (["b"], ["a"], {"a": 1, "b": 1})


def test_single_request_that_cannot_grow_preempts_itself():
    sched, runner = make(num_blocks=2, block_size=2)
    a = req("a", [1, 2, 3, 4])
    sched.add_request(a)
    step(sched, runner)
    so, outs = step(sched, runner)
    assert so.is_empty and outs == []
    assert so.finished_req_ids == {"a"}
    assert (a.status, a.num_computed_tokens, a.num_preemptions) == (RequestStatus.PREEMPTED, 0, 1)
    assert list(sched.waiting) == [a] and sched.running == []
    assert sched.kv_cache_manager.num_free_blocks == 2


# ---- abort, stop, outputs ------------------------------------------------------------------

def test_abort_frees_blocks_and_reports_finished():
    sched, runner = make(budget=8, max_seqs=1)
    a, b = req("a", [1] * 6), req("b", [2] * 3)
    sched.add_request(a)
    sched.add_request(b)
    step(sched, runner)
    assert sched.kv_cache_manager.get_block_ids("a") == [0, 1]
    assert sched.kv_cache_manager.num_free_blocks == 14
    aborted = sched.abort_requests(["a", "nope", "b"])
    assert aborted == [a, b]
    assert a.status == b.status == RequestStatus.FINISHED_ABORTED
    assert a.finish_reason == "abort"
    assert sched.kv_cache_manager.num_free_blocks == 16
    assert sched.kv_cache_manager.get_block_ids("a") == []
    assert not sched.has_unfinished_requests() and sched.get_num_unfinished_requests() == 0
    assert sched.abort_requests(["a"]) == []
    so = sched.schedule()
    assert so.is_empty and so.finished_req_ids == {"a", "b"}


def test_abort_while_step_runs_drops_its_token():
    sched, runner = make()
    a = req("a", [1, 2, 3])
    sched.add_request(a)
    so = sched.schedule()
    mro = runner.execute(so)
    sched.abort_requests(["a"])
    assert sched.update_from_output(so, mro) == []
    assert a.output_token_ids == []


def test_stop_reasons():
    sched, runner = make()
    sched.add_request(req("eos", [1, 2]))
    sched.add_request(req("stop_tok", [3, 4], stop_token_ids=[77]))
    sched.add_request(req("ignore", [5, 6], ignore_eos=True, max_tokens=3))
    sched.add_request(req("min", [7, 8], min_tokens=2))
    _, outs = step(sched, runner, {"eos": EOS, "stop_tok": 77, "ignore": EOS, "min": EOS})
    got = {o.req_id: (o.new_token_ids, o.finish_reason, o.stop_reason) for o in outs}
    assert got == {"eos": ([EOS], "stop", None), "stop_tok": ([77], "stop", 77),
                   "ignore": ([EOS], None, None), "min": ([EOS], None, None)}
    assert sched.num_running == 2
    _, outs = step(sched, runner, {"ignore": EOS, "min": EOS})
    assert {o.req_id: o.finish_reason for o in outs} == {"ignore": None, "min": "stop"}
    _, outs = step(sched, runner, {"ignore": EOS})
    assert [(o.req_id, o.finish_reason) for o in outs] == [("ignore", "length")]


def test_max_model_len_ends_request():
    sched, runner = make(max_len=6)
    sched.add_request(req("a", [1, 2, 3, 4], max_tokens=None))
    _, outs = step(sched, runner)
    assert outs[0].finish_reason is None
    _, outs = step(sched, runner)
    assert outs[0].finish_reason == "length"


def test_max_model_len_ends_request_even_before_min_tokens():
    # min_tokens holds back EOS and stop ids, never the hard length limit: past max_model_len there
    # is no KV room and no position to compute.
    sched, runner = make(max_len=6)
    sched.add_request(req("a", [1, 2, 3, 4], max_tokens=None, min_tokens=5))
    step(sched, runner)
    _, outs = step(sched, runner)
    assert outs[0].finish_reason == "length"
    assert not sched.has_unfinished_requests()


def test_prefix_hit_through_scheduler():
    sched, runner = make()
    sched.add_request(req("a", list(range(1, 10)), max_tokens=1))
    so, outs = step(sched, runner)
    assert outs[0].num_cached_tokens == 0 and outs[0].finished
    b = req("b", list(range(1, 9)) + [42, 43])
    sched.add_request(b)
    so, outs = step(sched, runner)
    new = so.scheduled_new_reqs[0]
    assert (new.block_ids, new.num_computed_tokens) == ([0, 1, 3], 8)
    assert so.num_scheduled_tokens == {"b": 2}
    assert b.num_cached_tokens == 8 and outs[0].num_cached_tokens == 8
    # A prompt fully in the cache still computes its last block.
    c = req("c", list(range(1, 9)))
    sched.add_request(c)
    so, _ = step(sched, runner)
    assert so.scheduled_new_reqs[0].num_computed_tokens == 4 and so.num_scheduled_tokens["c"] == 4


def test_logprobs_and_chunked_prompt_logprobs_are_forwarded():
    sched, _ = make(budget=4)
    sched.add_request(req("a", [1, 2, 3, 4, 5, 6], prompt_logprobs=1, logprobs=1))
    lp = lambda t: TopLogprobs([t], [-0.5], [1])  # noqa: E731
    so = sched.schedule()
    assert so.num_scheduled_tokens == {"a": 4}
    outs = sched.update_from_output(so, ModelRunnerOutput([], [], [], prompt_logprobs={"a": [lp(2), lp(3), lp(4)]}))
    assert [(o.req_id, o.new_token_ids, o.new_prompt_logprobs) for o in outs] == [("a", [], [lp(2), lp(3), lp(4)])]
    so = sched.schedule()
    assert so.num_scheduled_tokens == {"a": 2}
    outs = sched.update_from_output(so, ModelRunnerOutput(["a"], [9], [lp(9)], prompt_logprobs={"a": [lp(5), lp(6)]}))
    assert len(outs) == 1
    assert (outs[0].new_token_ids, outs[0].new_logprobs, outs[0].new_prompt_logprobs) == ([9], [lp(9)], [lp(5), lp(6)])


def test_prompt_logprobs_are_not_sent_again_after_preemption():
    # A resumed request recomputes its prompt (prompt logprobs never take prefix hits), and the
    # runner reports those positions' logprobs again: each position must be sent once.
    sched, _ = make(num_blocks=2)
    lp = lambda t: TopLogprobs([t], [-0.5], [1])  # noqa: E731
    sched.add_request(req("b", [5, 6, 7], max_tokens=2))
    sched.add_request(req("a", [1, 2, 3, 4], prompt_logprobs=1))
    so = sched.schedule()
    assert so.num_scheduled_tokens == {"b": 3, "a": 4}
    outs = sched.update_from_output(so, ModelRunnerOutput(["b", "a"], [11, 21], [None, None],
                                                          prompt_logprobs={"a": [lp(2), lp(3), lp(4)]}))
    assert {o.req_id: o.new_prompt_logprobs for o in outs}["a"] == [lp(2), lp(3), lp(4)]
    so = sched.schedule()  # a needs a second block and, last in line, preempts itself
    assert so.num_scheduled_tokens == {"b": 1} and sched.requests["a"].status == RequestStatus.PREEMPTED
    sched.update_from_output(so, ModelRunnerOutput(["b"], [12], [None]))  # b ends: length
    so = sched.schedule()
    assert [r.req_id for r in so.scheduled_new_reqs] == ["a"] and so.num_scheduled_tokens == {"a": 5}
    outs = sched.update_from_output(so, ModelRunnerOutput(["a"], [22], [None],
                                                          prompt_logprobs={"a": [lp(2), lp(3), lp(4)]}))
    assert [(o.req_id, o.new_token_ids, o.new_prompt_logprobs) for o in outs] == [("a", [22], [])]


def test_sampling_before_prefill_done_is_an_error():
    sched, _ = make(budget=4)
    sched.add_request(req("a", [1, 2, 3, 4, 5, 6]))
    so = sched.schedule()
    with pytest.raises(RuntimeError, match="not scheduled to sample"):
        sched.update_from_output(so, ModelRunnerOutput(["a"], [9], [None]))


def test_duplicate_request_id_rejected():
    sched, _ = make()
    sched.add_request(req("a", [1]))
    with pytest.raises(ValueError, match="already in the scheduler"):
        sched.add_request(req("a", [2]))


# ---- end to end under memory pressure ------------------------------------------------------

def reference_output(prompt: list[int], max_tokens: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(max_tokens):
        tokens.append(toy_model(tokens))
    return tokens[len(prompt):]


@pytest.mark.parametrize("chunked,caching", [(True, True), (True, False), (False, True)])
def test_random_workload_matches_unbatched_reference(chunked, caching):
    rng = random.Random(1234)
    budget = 48 if chunked else 64
    sched, runner = make(budget=budget, max_seqs=6, max_len=64, chunked=chunked, num_blocks=20,
                         block_size=4, caching=caching)
    shared = [rng.randrange(1, 90) for _ in range(20)]
    requests, produced = {}, {}
    for i in range(30):
        prefix = shared[:rng.choice([0, 4, 9, 16, 20])]
        prompt = prefix + [rng.randrange(1, 90) for _ in range(rng.randrange(1, 20))]
        # ignore_eos: toy_model never emits 0 anyway, this keeps lengths exact.
        r = Request(f"r{i}", prompt, SamplingParams(max_tokens=rng.randrange(1, 16), ignore_eos=True))
        requests[r.request_id] = r
        produced[r.request_id] = []
    pending = list(requests.values())
    steps, preemptions = 0, 0
    while pending or sched.has_unfinished_requests():
        for _ in range(rng.randrange(0, 3)):
            if pending:
                sched.add_request(pending.pop(0))
        so, outs = step(sched, runner)
        preempted_now = [rid for rid in so.finished_req_ids if not requests[rid].is_finished]
        preemptions += len(preempted_now)
        if preempted_now:  # memory is short: no admission in the step that preempted
            assert so.scheduled_new_reqs == [], preempted_now
        assert so.total_num_scheduled_tokens <= budget
        assert sched.num_running <= 6
        for o in outs:
            produced[o.req_id].extend(o.new_token_ids)
        steps += 1
        assert steps < 2000, "scheduler made no progress"
    for rid, r in requests.items():
        assert produced[rid] == reference_output(r.prompt_token_ids, r.sampling_params.max_tokens), rid
        assert r.status == RequestStatus.FINISHED_LENGTH
    assert preemptions > 0  # the pool is small enough that the workload exercises preemption
    pool = sched.kv_cache_manager.block_pool
    assert pool.num_free_blocks == 20
    if caching:
        assert sum(r.num_cached_tokens for r in requests.values()) > 0
    else:
        assert pool.cached_blocks == {}


# ---- capacity policy -------------------------------------------------------------------------

def run_to_completion(sched, runner, max_steps=500):
    done = {}
    for _ in range(max_steps):
        if not sched.has_unfinished_requests():
            break
        _, outs = step(sched, runner)
        for o in outs:
            done.setdefault(o.req_id, []).extend(o.new_token_ids)
    return done


@pytest.mark.parametrize("policy", ["max_utilization", "guaranteed_no_evict"])
def test_guaranteed_no_evict_never_preempts_and_gives_the_same_tokens(policy):
    # 12 blocks of 4 tokens; each request needs 3 blocks at full length (6 prompt + 6 output).
    sched = Scheduler(ResolvedSchedulerConfig(max_num_seqs=8, max_num_batched_tokens=64, max_model_len=64,
                                              capacity_policy=policy),
                      CacheConfig(block_size=4, num_blocks=12, enable_prefix_caching=False))
    runner = FakeRunner(4)
    prompts = {f"r{i}": [10 + i, 11, 12, 13, 14, 15] for i in range(6)}
    for rid, prompt in prompts.items():
        sched.add_request(req(rid, prompt, max_tokens=6, ignore_eos=True))
    first = sched.schedule()
    if policy == "guaranteed_no_evict":
        assert len(first.scheduled_new_reqs) == 4  # 4 x 3 blocks fill the cache at full length
    else:
        assert len(first.scheduled_new_reqs) == 6  # 6 x 2 blocks for the prompts: preemption follows
    outs = sched.update_from_output(first, runner.execute(first))
    done = run_to_completion(sched, runner)
    for o in outs:
        done[o.req_id] = o.new_token_ids + done.get(o.req_id, [])
    assert sorted(done) == sorted(prompts)
    assert all(len(t) == 6 for t in done.values())
    assert (sched.num_preemptions_total == 0) == (policy == "guaranteed_no_evict")
    sched.kv_cache_manager.check_integrity()


def test_unknown_capacity_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="capacity_scheduler_policy='fifo'"):
        ResolvedSchedulerConfig(max_num_seqs=1, max_num_batched_tokens=8, max_model_len=8, capacity_policy="fifo")
