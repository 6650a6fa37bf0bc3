"""Which steps the prefill CUDA graphs take (the graphs themselves are tested on a GPU:
tests/gpu/test_gpu_engine.py)."""
from types import SimpleNamespace

import torch

from tritium.worker.input_batch import BlockTable, CachedRequestState, StagingBuffers, build_step_inputs
from tritium.worker.prefill_graph import PrefillGraphs, prefill_graph_sizes
from tritium.sampling_params import SamplingParams


def test_sizes_follow_the_step_and_sequence_limits(monkeypatch):
    assert prefill_graph_sizes(8192, 4096) == [16, 32, 64, 128, 256, 384, 512, 768, 1024]
    assert prefill_graph_sizes(300, 4096) == [16, 32, 64, 128, 256]
    assert prefill_graph_sizes(8192, 100) == [16, 32, 64]
    assert prefill_graph_sizes(8, 4096) == []
    monkeypatch.setenv("TRITIUM_PREFILL_GRAPHS", "0")
    assert prefill_graph_sizes(8192, 4096) == []


def _step(prompt_lens: list[int], decodes: int = 0):
    """StepInputs of prefills of these lengths plus `decodes` one-token decode requests."""
    states, scheduled = [], {}
    table = BlockTable(64, 64)
    for i, n in enumerate(prompt_lens + [1] * decodes):
        done = 0 if i < len(prompt_lens) else 20  # a decode request has 20 tokens computed
        state = CachedRequestState(req_id=str(i), token_ids=[1] * (done + n), num_prompt_tokens=done + n,
                                   sampling_params=SamplingParams(), block_ids=list(range(8)),
                                   num_computed_tokens=done)
        state.row = table.add(state.block_ids)
        states.append(state)
        scheduled[state.req_id] = n
    return build_step_inputs(states, scheduled, table, 16, StagingBuffers(torch.device("cpu")))


def test_bucket_pads_to_the_next_size_within_the_request_limit():
    model = SimpleNamespace(config=SimpleNamespace(vocab_size=32))
    graphs = PrefillGraphs(model, [], None, [16, 32, 64], max_reqs=4, max_blocks_per_seq=8, max_model_len=128,
                           device=torch.device("cpu"))
    assert graphs.bucket(_step([5])) == 16
    assert graphs.bucket(_step([17])) == 32
    assert graphs.bucket(_step([30], decodes=3)) == 64  # 33 tokens, 4 requests
    assert graphs.bucket(_step([60], decodes=4)) is None  # 5 requests: eager
    assert graphs.bucket(_step([65])) is None  # more tokens than the largest graph
    assert graphs.bucket(_step([], decodes=3)) is None  # pure decode: the decode graphs' step
