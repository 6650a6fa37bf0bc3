"""TensorRT-LLM's LLM(...) argument forms resolved onto tritium's configs, without a model."""
from __future__ import annotations

import pytest

from tritium.config import BuildConfig, KvCacheConfig
from tritium.llm.llm_args import resolve_llm_args


def test_top_level_limits_override_a_build_config_and_copy_it():
    mine = BuildConfig(max_batch_size=8, max_seq_len=256)
    build, kv, options = resolve_llm_args(mine, None, False, dict(max_batch_size=64, max_beam_width=2,
                                                                   max_num_tokens=1024, max_input_len=100))
    assert (build.max_batch_size, build.max_beam_width, build.max_num_tokens, build.max_seq_len,
            build.max_input_len) == (64, 2, 1024, 256, 100)
    assert mine.max_batch_size == 8  # the caller's object is not changed
    assert kv == KvCacheConfig() and not options.enforce_eager and not options.disable_overlap_scheduler


def test_build_config_fields_set_one_by_one_are_checked_at_build():
    build = BuildConfig()
    build.max_batch_size = 128
    build.max_num_tokens = 2048
    build.max_beam_width = 4
    assert resolve_llm_args(build, None, False, {})[0].max_beam_width == 4
    build.max_seq_len = -5
    with pytest.raises(ValueError, match="max_seq_len"):
        resolve_llm_args(build, None, False, {})
    with pytest.raises(AttributeError, match="no field 'max_batch'"):
        build.max_batch = 3
    with pytest.raises(ValueError, match="max_input_len .* below max_seq_len"):
        BuildConfig(max_seq_len=100, max_input_len=100)


def test_runtime_options_and_kv_cache_config_forms():
    _, kv, options = resolve_llm_args(None, {"max_tokens": 4096, "enable_block_reuse": False}, False,
                                      dict(cuda_graph_config=None, disable_overlap_scheduler=True,
                                           batched_logits_processor=print, trust_remote_code=True,
                                           guided_decoding_backend="xgrammar", backend="pytorch"))
    assert kv.max_tokens == 4096 and not kv.enable_block_reuse
    assert options.enforce_eager and options.disable_overlap_scheduler and options.batched_logits_processor is print
    kv_config = KvCacheConfig()
    kv_config.free_gpu_memory_fraction = 0.5
    assert resolve_llm_args(None, kv_config, False, {})[1].free_gpu_memory_fraction == 0.5


@pytest.mark.parametrize("kwargs,match", [
    (dict(speculative_model="x"), "unknown LLM argument.*speculative_model"),
    (dict(enable_lora=True), "enable_lora"),
    (dict(pipeline_parallel_size=2), "pipeline_parallel_size"),
    (dict(tokenizer_mode="slow"), "tokenizer_mode"),
    (dict(backend="tensorrt"), "backend='tensorrt'"),
    (dict(guided_decoding_backend="outlines"), "guided_decoding_backend"),
    (dict(cuda_graph_config={"batch_sizes": [1, 2]}), "cuda_graph_config"),
    (dict(batched_logits_processor=3), "batched_logits_processor"),
    (dict(max_beam_width=0), "max_beam_width"),
])
def test_what_tritium_cannot_honour_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resolve_llm_args(None, None, False, kwargs)


def test_a_bad_kv_cache_config_dict_is_named():
    with pytest.raises(ValueError, match="kv_cache_config.*host_cache_size"):
        resolve_llm_args(None, {"host_cache_size": 1}, False, {})
    with pytest.raises(ValueError, match="free_gpu_memory_fraction"):
        resolve_llm_args(None, {"free_gpu_memory_fraction": 2.0}, False, {})
