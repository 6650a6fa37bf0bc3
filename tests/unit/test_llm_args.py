"""TensorRT-LLM's LLM(...) argument forms resolved onto tritium's configs, without a model."""
from __future__ import annotations

import pytest

from tritium.config import (BuildConfig, CapacitySchedulerPolicy, ContextChunkingPolicy, CudaGraphConfig, KvCacheConfig,
                            ModelConfig, ResolvedSchedulerConfig, SchedulerConfig)
from tritium.llm.llm_args import resolve_llm_args
from tritium.worker.cuda_graph import capture_sizes, decode_graph_sizes


def test_top_level_limits_override_a_build_config_and_copy_it():
    mine = BuildConfig(max_batch_size=8, max_seq_len=256)
    build, kv, scheduling, options = resolve_llm_args(mine, None, False, dict(max_batch_size=64, max_beam_width=2,
                                                                               max_num_tokens=1024, max_input_len=100))
    assert (build.max_batch_size, build.max_beam_width, build.max_num_tokens, build.max_seq_len,
            build.max_input_len) == (64, 2, 1024, 256, 100)
    assert mine.max_batch_size == 8  # the caller's object is not changed
    assert kv == KvCacheConfig() and not options.enforce_eager and not options.disable_overlap_scheduler
    assert scheduling is None  # the engine's default policy


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
    _, kv, _, options = resolve_llm_args(None, {"max_tokens": 4096, "enable_block_reuse": False}, False,
                                         dict(cuda_graph_config=None, disable_overlap_scheduler=True,
                                              batched_logits_processor=print, trust_remote_code=True,
                                              guided_decoding_backend="xgrammar", backend="pytorch",
                                              enable_trtllm_sampler=True, enable_mixed_sampler=True,
                                              stream_interval=1, print_iter_log=False))
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
    (dict(cuda_graph_config={"batch_sizes": [0, 2]}), "cuda_graph_config.batch_sizes must be a non-empty list"),
    (dict(cuda_graph_config={"batch_sizes": [1, 2], "max_batch_size": 8}), r"max_batch_size \(8\) must equal max"),
    (dict(cuda_graph_config={"enable_padding": "yes"}), "cuda_graph_config.enable_padding"),
    (dict(cuda_graph_config={"padding": True}), "cuda_graph_config.*padding"),
    (dict(batched_logits_processor=3), "batched_logits_processor"),
    (dict(max_beam_width=0), "max_beam_width"),
    (dict(stream_interval=4), "stream_interval"),
    (dict(print_iter_log=True), "print_iter_log"),
    (dict(scheduler_config={"capacity_scheduler_policy": "STATIC_BATCH"}), "capacity_scheduler_policy=STATIC_BATCH"),
    (dict(scheduler_config={"waiting_queue_policy": "fcfs"}), "scheduler_config.*waiting_queue_policy"),
    (dict(scheduler_config="GUARANTEED_NO_EVICT"), "scheduler_config must be a SchedulerConfig or a dict"),
])
def test_what_tritium_cannot_honour_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resolve_llm_args(None, None, False, kwargs)


def test_a_bad_kv_cache_config_dict_is_named():
    with pytest.raises(ValueError, match="kv_cache_config.*host_cache_size"):
        resolve_llm_args(None, {"host_cache_size": 1}, False, {})
    with pytest.raises(ValueError, match="free_gpu_memory_fraction"):
        resolve_llm_args(None, {"free_gpu_memory_fraction": 2.0}, False, {})


MODEL = ModelConfig(architecture="LlamaForCausalLM", vocab_size=100, hidden_size=64, intermediate_size=128,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16)


@pytest.mark.parametrize("given,policy", [
    (None, "max_utilization"),  # LLM(...) without a scheduler_config
    (SchedulerConfig(), "guaranteed_no_evict"),  # TensorRT-LLM's SchedulerConfig() default
    (SchedulerConfig(capacity_scheduler_policy=CapacitySchedulerPolicy.MAX_UTILIZATION), "max_utilization"),
    ({"capacity_scheduler_policy": "GUARANTEED_NO_EVICT", "context_chunking_policy": "FIRST_COME_FIRST_SERVED"},
     "guaranteed_no_evict"),  # the form a YAML file of LLM arguments gives
])
def test_scheduler_config_forms_resolve_to_the_schedulers_policy(given, policy):
    build, _, scheduling, _ = resolve_llm_args(None, None, False, {"scheduler_config": given})
    resolved = ResolvedSchedulerConfig.from_build(build, MODEL, scheduling)
    assert resolved.capacity_policy == policy
    assert resolved.capacity_scheduler_policy == CapacitySchedulerPolicy(policy.upper())


def test_scheduler_config_is_copied_and_checked_again_when_built():
    mine = SchedulerConfig()
    mine.capacity_scheduler_policy = "max_utilization"  # set field by field, any case
    _, _, scheduling, _ = resolve_llm_args(None, None, False, {"scheduler_config": mine})
    assert scheduling.capacity_scheduler_policy is CapacitySchedulerPolicy.MAX_UTILIZATION
    assert scheduling is not mine
    mine.capacity_scheduler_policy = "fifo"
    with pytest.raises(ValueError, match="capacity_scheduler_policy='fifo' is not a CapacitySchedulerPolicy; "
                                         "use MAX_UTILIZATION or GUARANTEED_NO_EVICT"):
        resolve_llm_args(None, None, False, {"scheduler_config": mine})
    with pytest.raises(AttributeError, match="no field 'capacity_policy'"):
        mine.capacity_policy = "max_utilization"


@pytest.mark.parametrize("kwargs,match", [
    (dict(capacity_scheduler_policy=CapacitySchedulerPolicy.STATIC_BATCH),
     "capacity_scheduler_policy=STATIC_BATCH is not supported by tritium"),
    (dict(capacity_scheduler_policy=None), "capacity_scheduler_policy=None is not a CapacitySchedulerPolicy"),
    (dict(context_chunking_policy=ContextChunkingPolicy.EQUAL_PROGRESS),
     "context_chunking_policy=EQUAL_PROGRESS is not supported by tritium"),
    (dict(context_chunking_policy="round_robin"), "context_chunking_policy='round_robin' is not a ContextChunking"),
    (dict(dynamic_batch_config={"enable_batch_size_tuning": True}), "dynamic_batch_config"),
])
def test_scheduler_config_values_tritium_cannot_honour_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SchedulerConfig(**kwargs)


def test_a_chunking_policy_needs_chunked_prefill():
    chunking = SchedulerConfig(context_chunking_policy=ContextChunkingPolicy.FIRST_COME_FIRST_SERVED)
    unchunked = BuildConfig(max_num_tokens=4096, max_seq_len=4096, enable_chunked_prefill=False)
    with pytest.raises(ValueError, match="FIRST_COME_FIRST_SERVED needs enable_chunked_prefill=True"):
        ResolvedSchedulerConfig.from_build(unchunked, MODEL, chunking)


def test_cuda_graph_config_forms_and_the_sizes_captured():
    assert resolve_llm_args(None, None, False, {})[3].cuda_graph_config is None  # tritium's sizes, padded
    assert decode_graph_sizes(64) == ([1, 2, 4, 8, 16, 32, 48, 64], True)
    options = resolve_llm_args(None, None, False, {"cuda_graph_config": {"batch_sizes": [4, 1, 2, 2]}})[3]
    assert decode_graph_sizes(64, options.cuda_graph_config) == ([1, 2, 4], False)  # TensorRT-LLM: no padding
    assert decode_graph_sizes(2, options.cuda_graph_config) == ([1, 2], False)  # above max_batch_size: unused
    padded = CudaGraphConfig(max_batch_size=16, enable_padding=True)
    assert decode_graph_sizes(256, padded) == (capture_sizes(16), True)
    assert decode_graph_sizes(256, CudaGraphConfig())[0] == capture_sizes(128)  # TensorRT-LLM's default top
    assert decode_graph_sizes(8, CudaGraphConfig())[0] == capture_sizes(8)
    with pytest.raises(ValueError, match=r"batch_sizes \[16, 32\] are all above max_batch_size \(8\)"):
        decode_graph_sizes(8, CudaGraphConfig(batch_sizes=[16, 32]))


@pytest.mark.parametrize("command", [["generate", "hi"], ["serve"], ["bench", "latency"]])
def test_every_command_takes_the_policy_in_trtllm_spellings(command):
    from tritium.entrypoints.cli import build_parser, engine_configs

    for flag, value in [("--capacity-scheduler-policy", "guaranteed_no_evict"),
                        ("--scheduler_policy", "GUARANTEED_NO_EVICT")]:
        args = build_parser().parse_args(command + [flag, value])
        assert engine_configs(args)[2].capacity_scheduler_policy is CapacitySchedulerPolicy.GUARANTEED_NO_EVICT
    assert engine_configs(build_parser().parse_args(command))[2] is None  # the engine's default
