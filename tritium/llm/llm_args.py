"""TensorRT-LLM's top-level `LLM(...)` arguments, resolved onto tritium's configuration.

TensorRT-LLM's PyTorch backend takes engine limits at the top level (`LLM(model, max_batch_size=64,
max_beam_width=2)`) where its older examples used a BuildConfig; both forms work here, the
top-level value winning. An argument tritium does not implement, or a value of a known one that
it cannot honour, is a ValueError naming it: nothing is silently ignored.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional

from tritium.config import BuildConfig, CudaGraphConfig, KvCacheConfig, SchedulerConfig

logger = logging.getLogger(__name__)

# Engine limits accepted at the top level, written into the BuildConfig.
BUILD_FIELDS = ("max_batch_size", "max_num_tokens", "max_seq_len", "max_beam_width", "max_input_len",
                "enable_chunked_prefill")

# Arguments tritium accepts only at the value that means "feature off" (what it implements).
_ONLY_DEFAULT = {
    "pipeline_parallel_size": 1, "context_parallel_size": 1, "enable_attention_dp": False, "enable_lora": False,
    "lora_config": None, "speculative_config": None,
    "peft_cache_config": None, "revision": None, "tokenizer_revision": None, "num_postprocess_workers": 0,
    "moe_expert_parallel_size": None, "moe_tensor_parallel_size": None, "moe_cluster_parallel_size": None,
    "tokenizer_mode": "auto", "reasoning_parser": None, "normalize_log_probs": False,
    "stream_interval": 1, "print_iter_log": False, "enable_iter_req_stats": False,
}
# Arguments that change nothing here (what they switch on is always on, or does not exist).
_NO_OP = {
    "trust_remote_code": "tritium runs no code from a checkpoint: its architectures are built in",
    "gpus_per_node": "one process uses the GPUs it is given",
    "gather_generation_logits": "generation logits are always available (SamplingParams.return_generation_logits)",
    "enable_iter_perf_stats": "per-step statistics are always kept (llm.get_stats())",
    "enable_trtllm_sampler": "tritium's one sampler implements every SamplingParams field",
    "enable_mixed_sampler": "each request is always sampled with its own SamplingParams",
}
_GUIDED_BACKENDS = (None, "llguidance", "xgrammar")
_BACKENDS = (None, "pytorch")
_DEFAULT = object()  # tells an explicit cuda_graph_config=None (no CUDA graphs) from no argument (tritium's)


@dataclass
class RuntimeOptions:
    """What the LLM front applies besides the configs."""

    enforce_eager: bool = False
    cuda_graph_config: Optional[CudaGraphConfig] = None  # None: tritium's graph sizes (or none if enforce_eager)
    disable_overlap_scheduler: bool = False
    batched_logits_processor: Optional[Callable] = None


def resolve_llm_args(build_config: Optional[BuildConfig], kv_cache_config: Any, enforce_eager: bool,
                     kwargs: dict[str, Any]) -> tuple[BuildConfig, KvCacheConfig, Optional[SchedulerConfig],
                                                      RuntimeOptions]:
    """-> (build config, KV cache config, scheduler config or None for the engine's default,
    runtime options); the caller's configs are copied, so changing them afterwards does not change
    a built LLM. Raises ValueError naming each argument that tritium does not implement."""
    kwargs = dict(kwargs)
    build = user_config(BuildConfig, "build_config", build_config)
    for name in BUILD_FIELDS:
        value = kwargs.pop(name, None)
        if value is not None:
            setattr(build, name, value)
    build.validate()
    kv = user_config(KvCacheConfig, "kv_cache_config", kv_cache_config)
    scheduling = kwargs.pop("scheduler_config", None)
    scheduling = None if scheduling is None else user_config(SchedulerConfig, "scheduler_config", scheduling)
    options = RuntimeOptions(enforce_eager=enforce_eager)

    cuda_graph_config = kwargs.pop("cuda_graph_config", _DEFAULT)
    if cuda_graph_config is None:
        options.enforce_eager = True
    elif cuda_graph_config is not _DEFAULT:
        options.cuda_graph_config = user_config(CudaGraphConfig, "cuda_graph_config", cuda_graph_config)
    options.disable_overlap_scheduler = bool(kwargs.pop("disable_overlap_scheduler", False))
    processor = kwargs.pop("batched_logits_processor", None)
    if processor is not None and not callable(processor):
        raise ValueError(f"batched_logits_processor must be a callable (a BatchedLogitsProcessor), got {processor!r}")
    options.batched_logits_processor = processor
    backend = kwargs.pop("backend", None)
    if backend not in _BACKENDS:
        raise ValueError(f"backend={backend!r} is not available: tritium is a PyTorch engine ('pytorch')")
    guided = kwargs.pop("guided_decoding_backend", None)
    if guided not in _GUIDED_BACKENDS:
        raise ValueError(f"guided_decoding_backend={guided!r} is not supported; tritium enforces grammars with "
                         "llguidance ('llguidance'; 'xgrammar' is accepted and served by llguidance)")
    for name, default in _ONLY_DEFAULT.items():
        if name in kwargs and kwargs.pop(name) != default:
            raise ValueError(f"LLM argument {name} is not supported by tritium (only {name}={default!r})")
    for name, why in _NO_OP.items():
        if kwargs.pop(name, None):
            logger.info("LLM(%s=...) changes nothing in tritium: %s", name, why)
    if kwargs:
        raise ValueError(f"unknown LLM argument(s): {', '.join(sorted(kwargs))}")
    return build, kv, scheduling, options


def user_config(cls, name: str, value: Any):
    """A copy of a user's config object, or one built from a dict (TensorRT-LLM's pydantic
    configs also take one, e.g. from a YAML file); None: the class's defaults."""
    if value is None:
        return cls()
    if isinstance(value, dict):
        try:
            return cls(**value)
        except TypeError as e:
            raise ValueError(f"{name}: {e}") from None
    if not isinstance(value, cls):
        raise ValueError(f"{name} must be a {cls.__name__} or a dict, got {type(value).__name__}")
    config = copy.copy(value)
    config.validate()
    return config
