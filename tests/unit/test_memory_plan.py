"""KV cache planning on the CPU: budget, max_tokens cap, usefulness cap, and clear errors."""
from __future__ import annotations

import pytest
import torch

from tritium.config import KvCacheConfig, ModelConfig, ResolvedSchedulerConfig
from tritium.worker.memory_plan import bytes_per_block, plan_kv_cache

CFG = ModelConfig(architecture="LlamaForCausalLM", vocab_size=100, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
CPU = torch.device("cpu")


def sched(max_seqs=256, max_len=4096):
    return ResolvedSchedulerConfig(max_num_seqs=max_seqs, max_num_batched_tokens=8192, max_model_len=max_len)


def test_bytes_per_block_counts_k_and_v_of_every_layer():
    # 2 (k, v) * 2 layers * 16 tokens * 2 kv heads * 16 dims * 4 bytes
    assert bytes_per_block(CFG, 16, torch.float32) == 2 * 2 * 16 * 2 * 16 * 4
    assert bytes_per_block(CFG, 16, torch.bfloat16) == bytes_per_block(CFG, 16, torch.float32) // 2


def test_cpu_budget_sets_the_block_count():
    kv = KvCacheConfig(cpu_memory_budget_gib=1 / 1024)  # 1 MiB
    plan = plan_kv_cache(CFG, sched(), kv, torch.float32, CPU)
    assert plan.num_blocks == 2**20 // bytes_per_block(CFG, 16, torch.float32)
    assert plan.max_tokens == plan.num_blocks * 16


def test_max_tokens_caps_the_cache_rounded_up_to_whole_blocks():
    plan = plan_kv_cache(CFG, sched(), KvCacheConfig(max_tokens=100), torch.float32, CPU)
    assert plan.num_blocks == 7 and "max_tokens=100" in plan.describe()


def test_no_more_blocks_than_the_batch_could_use():
    plan = plan_kv_cache(CFG, sched(max_seqs=2, max_len=64), KvCacheConfig(), torch.float32, CPU)
    assert plan.num_blocks == 2 * 4


def test_a_budget_that_holds_no_block_is_a_clear_error():
    with pytest.raises(ValueError, match="holds no block"):
        plan_kv_cache(CFG, sched(), KvCacheConfig(cpu_memory_budget_gib=1e-9), torch.float32, CPU)


@pytest.mark.parametrize("kwargs,field", [
    (dict(free_gpu_memory_fraction=0.0), "free_gpu_memory_fraction"),
    (dict(free_gpu_memory_fraction=1.5), "free_gpu_memory_fraction"),
    (dict(max_tokens=0), "max_tokens"),
    (dict(tokens_per_block=24), "tokens_per_block"),
    (dict(cpu_memory_budget_gib=0), "cpu_memory_budget_gib"),
])
def test_kv_cache_config_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=field):
        KvCacheConfig(**kwargs)


def _rss_anon_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon"))


def test_cpu_kv_cache_is_zeros_that_cost_memory_only_where_written():
    from tritium.config import CacheConfig
    from tritium.worker.memory_plan import allocate_kv_caches

    cfg = ModelConfig(architecture="LlamaForCausalLM", vocab_size=100, hidden_size=256, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, head_dim=64)
    cache = CacheConfig(block_size=16, num_blocks=8192, dtype=torch.bfloat16)  # 2 x 256 MiB reserved
    before = _rss_anon_kib()
    caches = allocate_kv_caches(cfg, cache, CPU)
    assert [c.shape for c in caches] == [(2, 8192, 16, 4, 64)] * 2 and caches[0].dtype == torch.bfloat16
    assert _rss_anon_kib() - before < 32 * 1024  # reserved, not resident
    caches[1][:, :64] = 1.5  # 64 blocks written: ~1 MiB
    assert _rss_anon_kib() - before < 40 * 1024
    assert caches[1][:, :64].eq(1.5).all() and caches[1][:, 64:].eq(0).all() and caches[0].eq(0).all()


def test_a_saved_profile_is_reused_only_under_the_same_key(monkeypatch):
    """A saved engine's profiled activation / graph figures are taken at load only when the GPU
    model, torch, the step limits and the graphs are the ones they were measured under; the key
    survives the JSON an engine is saved in."""
    import json

    from tritium.worker.memory_plan import KvCachePlan, memory_plan_summary, profile_key, saved_profile

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    sched = ResolvedSchedulerConfig(max_num_seqs=512, max_num_batched_tokens=8192, max_model_len=4096)
    key = profile_key(torch.device("cuda"), sched, 512, [16, 32, 1024], True)
    plan = KvCachePlan(num_blocks=100, block_size=16, bytes_per_block=2048, budget_bytes=204800, reason="budget")
    saved = json.loads(json.dumps(memory_plan_summary(10, plan, 111, 222, 4096, key)))
    assert saved_profile(saved, key) == (111, 222)
    other = profile_key(torch.device("cuda"), sched, 512, [16, 32], True)  # other prefill graphs
    assert saved_profile(saved, other) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert saved_profile(saved, profile_key(torch.device("cuda"), sched, 512, [16, 32, 1024], True)) is None
    assert saved_profile(memory_plan_summary(10, plan, 111, 222, 4096), key) is None  # saved before keys
    assert saved_profile(None, key) is None
    older = json.loads(json.dumps(memory_plan_summary(10, plan, 111, 222, 4096, dict(key, method=1))))
    assert saved_profile(older, key) is None  # measured by earlier profiling passes: measured again


def test_the_profiled_step_is_the_largest_the_scheduler_can_make():
    """A step holds max_num_tokens tokens even when one sequence holds fewer (max_seq_len 256:
    32 prompts of 256 share an 8192-token step), so the activation profile runs that many."""
    from tritium.worker.memory_plan import profile_step_lengths

    assert profile_step_lengths(8192, 256, 512) == [256] * 32
    assert profile_step_lengths(8192, 4096, 512) == [4096, 4096]
    assert profile_step_lengths(8192, 3000, 512) == [3000, 3000, 2192]
    assert profile_step_lengths(2048, 131072, 512) == [2048]  # one long prompt's chunk
    assert profile_step_lengths(8192, 256, 4) == [256] * 4  # no more prompts than the running limit
    assert profile_step_lengths(2048, 256, 2048) == [256] * 8  # the decode graphs' largest step, in tokens


def test_the_profiling_pass_runs_a_step_of_several_prompts(tiny_llama, monkeypatch):
    """The profiling forward (a GPU pass; its memory counters stubbed here) takes a step of 32
    prompts of max_seq_len tokens, through the engine's real model and attention backend, and
    reads every prompt's tokens (the attention sees 32 sequences, not one)."""
    from tritium import LLM
    from tritium.attention.torch_backend import TorchAttentionBackend
    from tritium.worker import memory_plan

    for name in ("empty_cache", "reset_peak_memory_stats", "synchronize"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a, **k: 0)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 1 << 20)
    with LLM(tiny_llama, dtype="float32") as llm:
        model, config = llm._parts.model, llm._parts.model_config
        sched = ResolvedSchedulerConfig(max_num_seqs=64, max_num_batched_tokens=512, max_model_len=16)
        seen = []
        backend = TorchAttentionBackend()
        forward = backend.forward

        def spy(q, k, v, kv_cache, meta, *args, **kwargs):
            seen.append((q.shape[0], meta.num_reqs))
            return forward(q, k, v, kv_cache, meta, *args, **kwargs)
        backend.forward = spy
        peak = memory_plan.profile_activation_bytes(model, config, sched, torch.device("cpu"), backend)
    assert 0 < peak < 1 << 20  # the stubbed peak less the scratch KV cache of 32 one-block prompts
    assert seen and all(step == (512, 32) for step in seen)
