"""A prefill graph's padded replay (static buffers: padding tokens without KV writes, requests past
the step's without query tokens, sampling rows gathered) gives the eager step's logits. On a GPU
the graphs are captured; in the CPU interpreter the replay runs the same padded forward eagerly."""
from __future__ import annotations

import functools
from types import SimpleNamespace

import torch

from tests.utils.tiny_models import make_tiny_checkpoint
from tritium.attention.backend import ForwardContext, forward_context
from tritium.attention.triton_backend import TritonAttentionBackend
from tritium.config import CacheConfig
from tritium.loader import load_model, model_config_from_source, resolve_model_source
from tritium.sampling_params import SamplingParams
from tritium.worker.input_batch import BlockTable, CachedRequestState, StagingBuffers, build_step_inputs
from tritium.worker.memory_plan import allocate_kv_caches
from tritium.worker.prefill_graph import PrefillGraphs


def test_padded_replay_matches_the_eager_step(device, tmp_path):
    source = resolve_model_source(make_tiny_checkpoint("llama", tmp_path))
    config = model_config_from_source(source, dtype="float32")
    model = load_model(source, config, device)
    kv = allocate_kv_caches(config, CacheConfig(block_size=16, num_blocks=16, dtype=torch.float32), device)
    backend, table = TritonAttentionBackend(num_sms=4), BlockTable(8, 8)
    gen = torch.Generator().manual_seed(3)

    def request(req_id: str, num_tokens: int, block_ids: list[int]) -> CachedRequestState:
        ids = torch.randint(3, config.vocab_size, (num_tokens,), generator=gen).tolist()
        state = CachedRequestState(req_id=req_id, token_ids=ids, num_prompt_tokens=num_tokens,
                                   sampling_params=SamplingParams(), block_ids=block_ids, num_computed_tokens=0)
        state.row = table.add(block_ids)
        return state

    def step(states, scheduled):
        return build_step_inputs(states, dict(zip([s.req_id for s in states], scheduled)), table, 16,
                                 StagingBuffers(device))

    def eager(inputs) -> torch.Tensor:
        with forward_context(ForwardContext(attn_metadata=inputs.attn_metadata, kv_caches=kv, backend=backend)):
            hidden = model(inputs.input_ids, inputs.positions)  # [T, H]
        return model.compute_logits(hidden[inputs.logits_indices])  # [N, V]

    with torch.inference_mode():
        # a: a 27-token prompt with 20 tokens already cached; b: a fresh 9-token prompt; c: decoding
        # after 30 tokens. First the cached parts, eagerly.
        a, b, c = request("a", 27, [0, 1]), request("b", 9, [2]), request("c", 31, [3, 4])
        eager(step([a, c], [20, 30]))
        a.num_computed_tokens, c.num_computed_tokens = 20, 30
        inputs = step([a, b, c], [7, 9, 1])  # 17 tokens: padded to 32
        want = eager(inputs)

        graphs = PrefillGraphs(model, kv, backend, [16, 32], max_reqs=4, max_blocks_per_seq=8, max_model_len=128,
                               device=device)
        if device.type == "cuda":
            graphs.capture(torch.cuda.graph_pool_handle())
        else:
            for size in graphs.sizes:
                graphs.metas[size] = graphs._metadata(size)
                graphs.graphs[size] = SimpleNamespace(replay=functools.partial(graphs._forward, size))
        # what an earlier, larger step leaves behind: the replay must reset what padding needs
        graphs.slot_mapping.fill_(5)
        graphs.seq_lens.fill_(40)
        graphs.query_start_loc.fill_(30)
        graphs.logits_indices.fill_(31)
        assert graphs.bucket(inputs) == 32
        got = graphs.run(inputs, 32)
    assert got.shape == want.shape == (3, config.vocab_size)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    assert (graphs.slot_mapping[17:] == -1).all()  # the padding wrote no KV
