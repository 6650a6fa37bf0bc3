"""How a step's batch is laid out for the attention backend: the count of leading one-token
requests a mixed step hands the decode kernel (AttentionMetadata.num_decodes); the decode batch
sizes captured as CUDA graphs above 512 requests, and which captured sizes get an eager warm-up
run of their own."""
import torch

from tritium.sampling_params import SamplingParams
from tritium.worker.cuda_graph import capture_sizes
from tritium.worker.input_batch import BlockTable, CachedRequestState, StagingBuffers, build_step_inputs


def _inputs(counts: list[int]):
    """StepInputs of requests with 20 tokens computed, scheduling counts[i] tokens each."""
    states, scheduled = [], {}
    table = BlockTable(64, 64)
    for i, n in enumerate(counts):
        state = CachedRequestState(req_id=str(i), token_ids=[1] * (20 + n), num_prompt_tokens=20 + n,
                                   sampling_params=SamplingParams(), block_ids=list(range(8)), num_computed_tokens=20)
        state.row = table.add(state.block_ids)
        states.append(state)
        scheduled[state.req_id] = n
    return build_step_inputs(states, scheduled, table, 16, StagingBuffers(torch.device("cpu")))


def test_num_decodes_counts_the_leading_one_token_requests():
    assert _inputs([1, 1, 1, 7, 1]).attn_metadata.num_decodes == 3  # a one-token request after a prompt is not counted
    assert _inputs([5, 1, 1]).attn_metadata.num_decodes == 0
    assert _inputs([1, 1]).attn_metadata.num_decodes == 2  # a decode-only step: all of them
    meta = _inputs([1, 1, 9]).attn_metadata
    assert meta.query_start_loc_cpu == [0, 1, 2, 11] and meta.seq_lens_cpu == [21, 21, 29]


def test_decode_graphs_cover_batches_above_512():
    sizes = capture_sizes(2048)
    assert sizes[-1] == 2048 and 512 in sizes
    assert [s for s in sizes if 512 < s <= 1024] == list(range(576, 1025, 64))
    assert [s for s in sizes if s > 1024] == list(range(1152, 2049, 128))
    assert capture_sizes(700)[-3:] == [576, 640, 700]  # the engine's max_batch_size itself is captured
    assert capture_sizes(512)[-2:] == [480, 512] and capture_sizes(64)[-1] == 64


def test_graph_sizes_sharing_kernels_are_captured_without_their_own_warm_up(monkeypatch):
    from tritium.kernels.decode_attention import num_kv_splits
    from tritium.worker.cuda_graph import sizes_to_warm_up, warm_up_key
    from tritium.worker.prefill_graph import prefill_graph_sizes

    prefill = prefill_graph_sizes(8192, 4096)
    # one run a class: >= 128 rows (row-wise FP8), 17..64 (weight-only streaming), 16 (all streaming)
    assert sizes_to_warm_up(prefill, warm_up_key) == {1024, 64, 16}
    decode = capture_sizes(256)
    warm = sizes_to_warm_up(decode, lambda b: warm_up_key(b, num_kv_splits(b, 8, 4096)))
    # 65..127 rows have a class of their own; below 16 each size has its own KV split count
    assert warm == {256, 112, 64, 16, 8, 4, 2, 1}
    assert warm_up_key(24) != warm_up_key(32)  # Triton specialises a row count on its divisibility by 16
    monkeypatch.setenv("TRITIUM_GRAPH_WARMUP", "all")
    assert sizes_to_warm_up(decode, warm_up_key) == set(decode)
