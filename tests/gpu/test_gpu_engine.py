"""The GPU engine (Triton kernels, decode CUDA graphs, overlapped scheduling) gives the same
greedy tokens as the eager engine and as the torch reference attention, also under preemption
and chunked prefill; kernels at Llama-3.1-8B sizes match a float64 reference."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.e2e.test_inflight_batching import GREEDY, engine_case, hf_greedy, make_prompts
from tests.kernels.paged_cache import dense_kv, random_paged_cache, reference_attention
from tritium import SamplingParams
from tritium.llm.llm import LLM


def tokens(path, prompts, **kw) -> list[list[int]]:
    with LLM(path, dtype="float32", **kw) as llm:
        return [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY)]


@pytest.mark.parametrize("case", ["roomy", "preempting", "tiny_budget"])
def test_graphs_overlap_eager_and_hf_agree(tiny_llama, hf_tiny_llama, case):
    prompts = make_prompts(hf_tiny_llama.config.vocab_size, count=10, seed=5)
    want = [hf_greedy(hf_tiny_llama, p, GREEDY.max_tokens) for p in prompts]
    build, kv = engine_case(case, prompts, tokens_per_block=16)
    with LLM(tiny_llama, dtype="float32", build_config=build, kv_cache_config=kv) as llm:
        assert llm._engine.core.runner.graphs is not None and llm._engine.core.runner.supports_overlap
        graphs = [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY)]
        if case == "preempting":
            assert llm._engine.core.scheduler.num_preemptions_total > 0
    eager = tokens(tiny_llama, prompts, build_config=build, kv_cache_config=kv, enforce_eager=True)
    assert graphs == eager == want


@pytest.mark.parametrize("padding", [False, True])
def test_cuda_graph_config_sizes_and_padding(tiny_llama, hf_tiny_llama, padding):
    from tritium import CudaGraphConfig

    prompts = make_prompts(hf_tiny_llama.config.vocab_size, count=3, seed=8)
    want = [hf_greedy(hf_tiny_llama, p, GREEDY.max_tokens) for p in prompts]
    config = CudaGraphConfig(batch_sizes=[4, 1, 2, 64], enable_padding=padding)  # 64 > max_batch_size: unused
    with LLM(tiny_llama, dtype="float32", max_batch_size=8, cuda_graph_config=config) as llm:
        graphs = llm._engine.core.runner.graphs
        assert graphs.sizes == sorted(graphs.graphs) == [1, 2, 4]
        assert [graphs.bucket(n) for n in (1, 3, 4, 5)] == ([1, 4, 4, None] if padding else [1, None, 4, None])
        assert [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY)] == want  # 3 at a time


def test_torch_reference_attention_gives_the_same_tokens(tiny_llama):
    prompts = make_prompts(256, count=6, seed=6)
    code = ("import json, sys; from tests.gpu.test_gpu_engine import tokens;"
            f"print(json.dumps(tokens({tiny_llama!r}, {prompts!r})))")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ref = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, TRITIUM_TRITON="0", PYTHONPATH=root),
                         cwd=root, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    import json

    assert tokens(tiny_llama, prompts) == json.loads(ref)


@pytest.mark.parametrize("block_size", [16, 32])
@pytest.mark.parametrize("batch,ctx", [(1, 4096), (8, 1500), (64, 700)])
def test_decode_kernel_at_llama_8b_sizes(block_size, batch, ctx):
    from tritium.kernels.decode_attention import num_kv_splits, paged_decode_attention

    heads, kvh, d, dev = 32, 8, 128, torch.device("cuda")
    seq_lens = [ctx - (37 * i) % (ctx // 2) for i in range(batch)]  # varied lengths, all >= ctx / 2
    cache, table = random_paged_cache(seq_lens, kvh, d, block_size, torch.bfloat16, dev, seed=batch)
    q = torch.randn(batch, heads, d, device=dev, dtype=torch.bfloat16)
    out = paged_decode_attention(q, cache, table, torch.tensor(seq_lens, dtype=torch.int32, device=dev), d ** -0.5,
                                 num_splits=num_kv_splits(batch, kvh, ctx))
    for s in (0, batch - 1):
        k, v = dense_kv(cache, table[s], seq_lens[s])
        ref = reference_attention(q[s:s + 1], k, v, d ** -0.5, torch.tensor([seq_lens[s] - 1], device=dev))
        assert ((out[s:s + 1].double() - ref).norm() / ref.norm()).item() < 1e-2


def test_sampled_decoding_is_reproducible_under_graphs_and_overlap(tiny_llama):
    prompts = make_prompts(256, count=4, seed=7)
    params = SamplingParams(max_tokens=16, temperature=0.8, top_p=0.9, seed=11, ignore_eos=True)
    with LLM(tiny_llama, dtype="float32") as llm:
        a = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
    b = [o.outputs[0].token_ids for o in LLM(tiny_llama, dtype="float32", enforce_eager=True).generate(prompts, params)]
    assert a == b


def test_prefill_graphs_replay_prompts_chunks_and_cached_prefixes(tiny_llama, hf_tiny_llama):
    """Steps with prompt tokens replay the prefill graphs and give Hugging Face's tokens: prompts of
    many lengths at once (steps mixing prefills and decodes, one prompt chunked by max_num_tokens),
    then a prompt whose prefix is cached (its prefill attends over a cached context)."""
    import random

    from tritium import BuildConfig, KvCacheConfig

    rng = random.Random(11)
    shared = [rng.randrange(256) for _ in range(70)]
    prompts = [[rng.randrange(256) for _ in range(n)] for n in (3, 17, 40, 100, 150)]
    prompts += [shared + [rng.randrange(256) for _ in range(n)] for n in (5, 30)]
    want = [hf_greedy(hf_tiny_llama, p, GREEDY.max_tokens) for p in prompts]
    build = BuildConfig(max_batch_size=8, max_num_tokens=128, max_seq_len=240)
    with LLM(tiny_llama, dtype="float32", build_config=build, kv_cache_config=KvCacheConfig(tokens_per_block=16)) as llm:
        graphs = llm._engine.core.runner.prefill_graphs
        assert graphs.sizes == [16, 32, 64, 128]
        replayed, run = [], graphs.run
        graphs.run = lambda inputs, size: replayed.append((inputs.attn_metadata.num_actual_tokens, size)) or run(
            inputs, size)
        got = [o.outputs[0].token_ids for o in llm.generate(prompts[:5], GREEDY)]
        first = llm.generate([prompts[5]], GREEDY)[0]
        second = llm.generate([prompts[6]], GREEDY)[0]
    assert got + [first.outputs[0].token_ids, second.outputs[0].token_ids] == want
    assert second.num_cached_tokens >= 64  # the shared prefix's whole blocks came from the cache
    assert all(tokens <= size < 2 * max(tokens, 16) for tokens, size in replayed), replayed
    assert replayed[0] == (128, 128)  # the first step: a full chunk of the five prompts
    assert replayed[-1][0] == len(prompts[6]) - second.num_cached_tokens  # the prefill after a cached prefix


def test_eager_mixed_steps_run_their_decodes_through_the_decode_kernel(tiny_llama, hf_tiny_llama):
    """Without graphs, a step with prompt tokens puts its one-token requests first and the Triton
    backend hands them to the decode kernel (AttentionMetadata.num_decodes): Hugging Face's tokens."""
    from tritium import BuildConfig

    prompts = make_prompts(hf_tiny_llama.config.vocab_size, count=10, seed=9)
    want = [hf_greedy(hf_tiny_llama, p, GREEDY.max_tokens) for p in prompts]
    build = BuildConfig(max_batch_size=8, max_num_tokens=48)  # prompts arrive in chunks beside decodes
    with LLM(tiny_llama, dtype="float32", build_config=build, enforce_eager=True) as llm:
        backend = llm._engine.core.runner.backend
        seen, forward = [], backend.forward

        def spy(q, k, v, kv_cache, meta, *args, **kwargs):
            seen.append((meta.num_decodes, meta.num_reqs, meta.is_pure_decode))
            return forward(q, k, v, kv_cache, meta, *args, **kwargs)
        backend.forward = spy
        got = [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY)]
    assert got == want
    assert any(0 < d < n and not pure for d, n, pure in seen), "no mixed step split its decodes off"


def test_a_saved_engine_reuses_its_memory_profile(tiny_llama, tmp_path, caplog):
    """Loading a saved engine on the same GPU with the same limits takes the activation and graph
    figures it was saved with instead of profiling again, and plans the same KV cache."""
    import logging

    prompts = make_prompts(256, count=3, seed=9)
    with LLM(tiny_llama, dtype="float32", max_batch_size=8) as llm:
        want = [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY)]
        llm.save(str(tmp_path / "engine"))
        built = llm._parts.memory_plan
    with caplog.at_level(logging.INFO, logger="tritium.engine.factory"):
        with LLM(str(tmp_path / "engine"), max_batch_size=8) as llm:
            assert [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY)] == want
            loaded = llm._parts.memory_plan
    assert "memory profile: the saved engine's" in caplog.text
    assert (loaded["activation_bytes"], loaded["cuda_graph_bytes"]) == (built["activation_bytes"],
                                                                       built["cuda_graph_bytes"])
