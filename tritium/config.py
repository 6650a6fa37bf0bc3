"""Frozen configuration dataclasses, one per concern, validated once on construction.

`ModelConfig` is built from a Hugging Face config.json dict through `ModelConfig.from_hf()`;
`BuildConfig`, `KvCacheConfig` and `SchedulerConfig` are the user-facing knobs of the TensorRT-LLM
API (settable field by field); `ResolvedSchedulerConfig` is what the scheduler is built from.
"""
from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch

# Hugging Face architecture names the Llama-family definition serves.
SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def cpu_capability() -> str:
    """The vector ISA ATen's CPU kernels dispatch to: 'AVX512', 'AVX2', 'DEFAULT', ... It follows the
    hardware, lowered by ATEN_CPU_CAPABILITY (e.g. `ATEN_CPU_CAPABILITY=avx2` on an AVX-512 CPU)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except AttributeError:  # very old torch
        return "DEFAULT"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line.split() for line in f if line.startswith("flags")), []))
    except OSError:
        return set()


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether bfloat16 matmuls run on bf16 dot-product instructions here: the CPU has AVX512_BF16
    or AMX, and neither ATen (ATEN_CPU_CAPABILITY) nor oneDNN (ONEDNN_MAX_CPU_ISA) is limited below
    AVX-512. torch.cpu's own check reads the hardware flags only, so a process told to behave as
    an AVX2 CPU would otherwise still pick the bf16 kernels it was told not to use."""
    if not cpu_capability().startswith("AVX512"):
        return False
    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers of torch.cpu; fall back to the kernel's flags
        return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def cpu_prefers_bf16() -> bool:
    """bfloat16 is the faster CPU dtype: with native bf16 instructions, and on AVX2 CPUs with
    oneDNN (one-row matmuls stream the bf16 weights through ATen's AVX2 gemv, twice float32's
    speed; many-row matmuls run on float32 copies of the same values: layers/cpu_linear.py)."""
    if cpu_has_native_bf16():
        return True
    return cpu_capability() in ("AVX2", "AVX512") and torch.backends.mkldnn.is_available()


def resolve_dtype(dtype: str | torch.dtype, config_dtype: Optional[str], device: torch.device) -> torch.dtype:
    """Turn the user's `dtype` ("auto", "bfloat16", ...) into a torch dtype for `device`.

    "auto" takes the checkpoint's dtype on a GPU (bfloat16 when it says float32 or nothing);
    on a CPU it takes bfloat16 when cpu_prefers_bf16() (x86 with AVX2 or better: half the bytes
    to stream) or the checkpoint is 16-bit (CPU float16 matmuls are slow), float32 otherwise
    (GGUF files name no dtype).
    """
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype={dtype} is not supported; use float32, bfloat16 or float16")
        return dtype
    if not isinstance(dtype, str):
        raise ValueError(f"dtype must be a string or torch.dtype, got {type(dtype).__name__}")
    if dtype != "auto":
        if dtype not in _DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported; use 'auto', 'bfloat16', 'float16' or 'float32'")
        return _DTYPES[dtype]
    cfg = _DTYPES.get(str(config_dtype).replace("torch.", "")) if config_dtype else None
    if device.type == "cuda":
        return cfg if cfg in (torch.bfloat16, torch.float16) else torch.bfloat16
    return torch.bfloat16 if cfg in (torch.bfloat16, torch.float16) or cpu_prefers_bf16() else torch.float32


def _rope_settings(hf: dict[str, Any]) -> tuple[float, Optional[dict[str, Any]]]:
    """(rope_theta, rope_scaling) from either the classic (`rope_theta`, `rope_scaling`) or the
    newer (`rope_parameters`) form of config.json. rope_scaling is None for plain RoPE."""
    params = hf.get("rope_parameters")
    if isinstance(params, dict):
        theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    else:
        theta = hf.get("rope_theta", 10000.0)
        scaling = dict(hf["rope_scaling"]) if hf.get("rope_scaling") else {}
    if "type" in scaling and "rope_type" not in scaling:
        scaling["rope_type"] = scaling.pop("type")
    if scaling.get("rope_type", "default") == "default":
        return float(theta), None
    return float(theta), scaling


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and options of one Llama-family checkpoint. Built by `from_hf()`."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: Optional[dict[str, Any]] = None  # {"rope_type": "llama3"|"linear"|"dynamic", ...}
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v projections carry a bias (Qwen2)
    qk_norm: bool = False  # per-head RMSNorm on q and k before RoPE (Qwen3)
    hidden_act: str = "silu"
    dtype: torch.dtype = torch.float32
    bos_token_id: Optional[int] = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"architecture {self.architecture!r} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"config field {name} must be a positive integer, got {getattr(self, name)!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if self.hidden_act != "silu":
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; only 'silu'")

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @classmethod
    def from_hf(cls, hf: dict[str, Any], dtype: torch.dtype = torch.float32,
                eos_token_ids: Optional[tuple[int, ...]] = None) -> "ModelConfig":
        """Build from a config.json dict (classic or `rope_parameters` form).

        `eos_token_ids` overrides the config's eos_token_id (generation_config.json has the
        authoritative list)."""
        archs = hf.get("architectures") or []
        if not archs:
            model_type = hf.get("model_type", "")
            archs = [{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                      "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}.get(model_type, model_type or "?")]
        arch = archs[0]
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"architecture {arch!r} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in hf]
        if missing:
            raise ValueError(f"config.json lacks required field(s): {', '.join(missing)}")
        theta, scaling = _rope_settings(hf)
        num_heads = hf["num_attention_heads"]
        head_dim = hf.get("head_dim") or hf["hidden_size"] // num_heads
        if eos_token_ids is None:
            eos = hf.get("eos_token_id")
            eos_token_ids = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())
        default_bias = arch == "Qwen2ForCausalLM"
        return cls(
            architecture=arch,
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=hf["num_hidden_layers"],
            num_attention_heads=num_heads,
            num_key_value_heads=hf.get("num_key_value_heads") or num_heads,
            head_dim=head_dim,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            attention_bias=bool(hf.get("attention_bias", default_bias)),
            qk_norm=arch == "Qwen3ForCausalLM",
            hidden_act=hf.get("hidden_act", "silu"),
            dtype=dtype,
            bos_token_id=hf.get("bos_token_id"),
            eos_token_ids=tuple(int(e) for e in eos_token_ids),
        )


class _SettableFields:
    """For user-facing config dataclasses: fields may be set one by one after construction
    (TensorRT-LLM's examples do), a name the class does not have raises at once, and validate()
    runs on construction and again when an LLM is built from the config."""

    def __post_init__(self):
        self.validate()

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self.__dataclass_fields__:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}; "
                                 f"fields: {', '.join(self.__dataclass_fields__)}")
        super().__setattr__(name, value)

    def validate(self) -> None:
        raise NotImplementedError


@dataclass
class KvCacheConfig(_SettableFields):
    """Paged KV cache settings (TensorRT-LLM's names).

    Capacity on a GPU: `free_gpu_memory_fraction` of the memory left after weights and
    activations, capped by `max_tokens`. On a CPU: `max_tokens` if given, else
    `cpu_memory_budget_gib`. Fields may be set one by one, like BuildConfig's.
    """

    enable_block_reuse: bool = True  # prefix caching by chained block hashes
    free_gpu_memory_fraction: float = 0.9
    max_tokens: Optional[int] = None
    tokens_per_block: int = 16
    cpu_memory_budget_gib: float = 1.0

    def validate(self) -> None:
        if not 0.0 < self.free_gpu_memory_fraction <= 1.0:
            raise ValueError(f"free_gpu_memory_fraction must be in (0, 1], got {self.free_gpu_memory_fraction}")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {self.max_tokens}")
        if self.tokens_per_block <= 0 or self.tokens_per_block & (self.tokens_per_block - 1):
            raise ValueError(f"tokens_per_block must be a positive power of two, got {self.tokens_per_block}")
        if self.cpu_memory_budget_gib <= 0:
            raise ValueError(f"cpu_memory_budget_gib must be positive, got {self.cpu_memory_budget_gib}")


# TensorRT-LLM BuildConfig fields that steer TensorRT's engine builder, which tritium does not
# have: accepted (a script written for TensorRT-LLM runs) and kept in BuildConfig.trtllm_fields,
# with no effect, for the reason given.
_TENSORRT_ONLY = "a TensorRT engine-builder setting; tritium builds no TensorRT engine"
TRTLLM_NO_EFFECT_FIELDS = {
    "opt_batch_size": "a TensorRT optimization-profile hint; tritium's kernels take any batch as it comes",
    "opt_num_tokens": "a TensorRT optimization-profile hint; tritium's kernels take any batch as it comes",
    "force_num_profiles": _TENSORRT_ONLY, "profiling_verbosity": _TENSORRT_ONLY,
    "input_timing_cache": _TENSORRT_ONLY, "output_timing_cache": _TENSORRT_ONLY,
    "use_strip_plan": _TENSORRT_ONLY, "use_refit": _TENSORRT_ONLY, "visualize_network": _TENSORRT_ONLY,
    "enable_debug_output": _TENSORRT_ONLY, "monitor_memory": _TENSORRT_ONLY,
    "strongly_typed": "tritium always runs the dtype and quantization it is given (no type inference to constrain)",
    "plugin_config": "tritium's own kernels (Triton, cuBLAS) replace TensorRT's plugins and are always on",
    "gather_context_logits": "logits are returned per request (SamplingParams.return_context_logits) without a "
                             "build flag",
    "gather_generation_logits": "logits are returned per request (SamplingParams.return_generation_logits) "
                                "without a build flag",
}
# Fields of features tritium does not implement: only their "off" value is accepted.
TRTLLM_UNSUPPORTED_FIELDS = {
    "kv_cache_type": (("paged", "PAGED", "KVCacheType.PAGED"), "tritium's KV cache is always paged"),
    "max_prompt_embedding_table_size": ((0,), "prompt-tuning tables are not implemented"),
    "max_draft_len": ((0,), "speculative decoding is not implemented"),
    "speculative_decoding_mode": ((None,), "speculative decoding is not implemented"),
    "lora_config": ((None,), "LoRA adapters are not implemented"),
    "weight_sparsity": ((False,), "sparse weights are not implemented"),
    "weight_streaming": ((False,), "weight streaming is not implemented"),
    "auto_parallel_config": ((None,), "auto parallelism is not implemented (tensor_parallel_size is the knob)"),
    "max_encoder_input_len": ((1024,), "encoder-decoder models are not implemented"),
    "use_mrope": ((False,), "multimodal RoPE is not implemented"),
    "dry_run": ((False,), "`tritium build --dry-run` prints the memory plan"),
}


@dataclass
class BuildConfig(_SettableFields):
    """Engine limits (TensorRT-LLM's names). max_seq_len=None takes the model's context length.

    Fields may be set one by one after construction (`build_config.max_batch_size = 128`, as
    TensorRT-LLM's examples do); every value is checked again when the LLM is built, and setting
    a field BuildConfig does not have raises at once. TensorRT-LLM's other BuildConfig fields
    are accepted with no effect when they only steer TensorRT's builder (TRTLLM_NO_EFFECT_FIELDS
    says why; kept in `trtllm_fields`), and only at their "off" value when they turn on a feature
    tritium does not implement (TRTLLM_UNSUPPORTED_FIELDS); docs/TRTLLM_API.md lists them.
    """

    max_batch_size: int = 256
    max_num_tokens: int = 8192  # tokens computed in one step, all requests together
    max_seq_len: Optional[int] = None  # prompt + generated tokens of one request
    max_beam_width: int = 1  # widest beam search a request may ask for (SamplingParams.use_beam_search)
    max_input_len: Optional[int] = None  # longest prompt accepted (None: max_seq_len - 1)
    enable_chunked_prefill: bool = True

    def validate(self) -> None:
        def positive_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v > 0

        for name in ("max_batch_size", "max_num_tokens", "max_beam_width"):
            if not positive_int(getattr(self, name)):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("max_seq_len", "max_input_len"):
            if getattr(self, name) is not None and not positive_int(getattr(self, name)):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.max_input_len is not None and self.max_seq_len is not None and self.max_input_len >= self.max_seq_len:
            raise ValueError(f"max_input_len ({self.max_input_len}) must be below max_seq_len ({self.max_seq_len}): "
                             "a prompt needs room for at least one generated token")
        if self.max_num_tokens < self.max_beam_width:
            raise ValueError(f"max_num_tokens ({self.max_num_tokens}) must be at least max_beam_width "
                             f"({self.max_beam_width}): a beam search's beams decode in the same step")
        if not isinstance(self.enable_chunked_prefill, bool):
            raise ValueError(f"enable_chunked_prefill must be True or False, got {self.enable_chunked_prefill!r}")

    @property
    def trtllm_fields(self) -> dict[str, Any]:
        """TensorRT-LLM fields set on this config that have no effect in tritium."""
        return self.__dict__.setdefault("_trtllm_fields", {})

    def __setattr__(self, name: str, value: Any) -> None:
        if name in TRTLLM_NO_EFFECT_FIELDS:
            self.trtllm_fields[name] = value
            return
        if name in TRTLLM_UNSUPPORTED_FIELDS:
            off, why = TRTLLM_UNSUPPORTED_FIELDS[name]
            if not any(value == o or str(value) == str(o) for o in off):
                raise ValueError(f"BuildConfig.{name}={value!r} is not supported: {why}")
            return
        super().__setattr__(name, value)


def _build_config_init(dataclass_init):
    """BuildConfig(...) also takes TensorRT-LLM's other field names (see BuildConfig.__setattr__)."""
    trtllm = set(TRTLLM_NO_EFFECT_FIELDS) | set(TRTLLM_UNSUPPORTED_FIELDS)

    @functools.wraps(dataclass_init)
    def __init__(self, *args, **kwargs):
        extra = {name: kwargs.pop(name) for name in list(kwargs) if name in trtllm}
        dataclass_init(self, *args, **kwargs)
        for name, value in extra.items():
            setattr(self, name, value)

    return __init__


BuildConfig.__init__ = _build_config_init(BuildConfig.__init__)


@dataclass
class CudaGraphConfig(_SettableFields):
    """Decode CUDA graphs (TensorRT-LLM's CudaGraphConfig and defaults): `batch_sizes` to capture
    (default: tritium's sizes up to `max_batch_size`, which defaults to 128); sizes above the
    engine's max_batch_size are never used and not captured. `enable_padding`: a decode batch of a
    size not captured replays the next larger graph (True) or runs eagerly (False). LLM(...)
    without a cuda_graph_config captures tritium's sizes up to max_batch_size, padded;
    cuda_graph_config=None turns graphs off. Graphs exist on GPUs only: on a CPU this changes nothing.
    """

    batch_sizes: Optional[list[int]] = None
    max_batch_size: int = 0
    enable_padding: bool = False

    def validate(self) -> None:
        sizes = self.batch_sizes
        if sizes is not None and (not isinstance(sizes, (list, tuple)) or not sizes or not all(
                isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in sizes)):
            raise ValueError(f"cuda_graph_config.batch_sizes must be a non-empty list of positive integers, "
                             f"got {sizes!r}")
        if not isinstance(self.max_batch_size, int) or isinstance(self.max_batch_size, bool) or self.max_batch_size < 0:
            raise ValueError(f"cuda_graph_config.max_batch_size must be an integer >= 0, got {self.max_batch_size!r}")
        if sizes and self.max_batch_size not in (0, max(sizes)):
            raise ValueError(f"cuda_graph_config.max_batch_size ({self.max_batch_size}) must equal max(batch_sizes) "
                             f"({max(sizes)}) when both are given")
        if not isinstance(self.enable_padding, bool):
            raise ValueError(f"cuda_graph_config.enable_padding must be True or False, got {self.enable_padding!r}")


class CapacitySchedulerPolicy(str, enum.Enum):
    """What the scheduler does when the KV cache runs short (TensorRT-LLM's names and values).

    MAX_UTILIZATION admits a request when its next tokens fit and preempts (recomputes) the newest
    requests when the cache runs out: the most requests in flight. GUARANTEED_NO_EVICT admits one
    only when the cache can hold it and every running request at full length (prompt +
    max_tokens, or max_seq_len): never preempts, fewer in flight. STATIC_BATCH (TensorRT-LLM's
    legacy static batching) is a member so that naming it gets a clear error."""

    MAX_UTILIZATION = "MAX_UTILIZATION"
    GUARANTEED_NO_EVICT = "GUARANTEED_NO_EVICT"
    STATIC_BATCH = "STATIC_BATCH"

    def __str__(self) -> str:
        return self.value


class ContextChunkingPolicy(str, enum.Enum):
    """How a step's token budget is split among prompts being prefilled in chunks (TensorRT-LLM's
    names). tritium chunks first come, first served: requests in arrival order, each as large a
    chunk as the budget leaves."""

    FIRST_COME_FIRST_SERVED = "FIRST_COME_FIRST_SERVED"
    EQUAL_PROGRESS = "EQUAL_PROGRESS"

    def __str__(self) -> str:
        return self.value


IMPLEMENTED_CAPACITY_POLICIES = (CapacitySchedulerPolicy.MAX_UTILIZATION,
                                 CapacitySchedulerPolicy.GUARANTEED_NO_EVICT)
# LLM(...) without a scheduler_config: preempt rather than hold back (vLLM's behaviour; a request
# without max_tokens would otherwise reserve max_seq_len). TensorRT-LLM's default is GUARANTEED_NO_EVICT.
DEFAULT_CAPACITY_POLICY = CapacitySchedulerPolicy.MAX_UTILIZATION


def _supported_member(enum_cls, name: str, value: Any, supported: tuple, why: str):
    """`value` (a member of enum_cls, or its name in any case) as a member in `supported`."""
    member = value if isinstance(value, enum_cls) else (
        enum_cls.__members__.get(value.upper()) if isinstance(value, str) else None)
    choices = " or ".join(m.value for m in supported)
    if member is None:
        raise ValueError(f"{name}={value!r} is not a {enum_cls.__name__}; use {choices}")
    if member not in supported:
        raise ValueError(f"{name}={member.value} is not supported by tritium ({why}); use {choices}")
    return member


@dataclass
class SchedulerConfig(_SettableFields):
    """Scheduling policies (TensorRT-LLM's SchedulerConfig; its defaults):

        LLM(model, scheduler_config=SchedulerConfig(
            capacity_scheduler_policy=CapacitySchedulerPolicy.GUARANTEED_NO_EVICT))

    Policies are members of the enums above or their names (any case). LLM(...) without a
    scheduler_config uses MAX_UTILIZATION (DEFAULT_CAPACITY_POLICY). context_chunking_policy:
    None or FIRST_COME_FIRST_SERVED (what tritium does; it needs chunked prefill);
    EQUAL_PROGRESS is not implemented. dynamic_batch_config: only None (TensorRT-LLM's PyTorch
    backend does not use it either). Fields may be set one by one, like BuildConfig's.
    """

    capacity_scheduler_policy: Union[CapacitySchedulerPolicy, str] = CapacitySchedulerPolicy.GUARANTEED_NO_EVICT
    context_chunking_policy: Union[None, ContextChunkingPolicy, str] = None
    dynamic_batch_config: Any = None

    def validate(self) -> None:
        self.capacity_scheduler_policy = _supported_member(
            CapacitySchedulerPolicy, "capacity_scheduler_policy", self.capacity_scheduler_policy,
            IMPLEMENTED_CAPACITY_POLICIES, "requests are always batched in flight")
        if self.context_chunking_policy is not None:
            self.context_chunking_policy = _supported_member(
                ContextChunkingPolicy, "context_chunking_policy", self.context_chunking_policy,
                (ContextChunkingPolicy.FIRST_COME_FIRST_SERVED,),
                "prompts are chunked in arrival order; None means the same")
        if self.dynamic_batch_config is not None:
            raise ValueError("dynamic_batch_config is not supported by tritium (only None): batch size and "
                             "max_num_tokens stay as configured")


@dataclass(frozen=True)
class ResolvedSchedulerConfig:
    """What the scheduler needs, resolved from BuildConfig, the user's SchedulerConfig and the model.

    capacity_policy: CapacitySchedulerPolicy's value in lower case ("max_utilization" or
    "guaranteed_no_evict"; core/ compares strings, it imports no torch-importing module).
    """

    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    enable_chunked_prefill: bool = True
    capacity_policy: str = DEFAULT_CAPACITY_POLICY.value.lower()
    max_beam_width: int = 1

    def __post_init__(self):
        implemented = [p.value.lower() for p in IMPLEMENTED_CAPACITY_POLICIES]
        if self.capacity_policy not in implemented:
            raise ValueError(f"capacity_scheduler_policy={self.capacity_policy!r} is not supported; "
                             f"use one of {', '.join(implemented)}")
        if not self.enable_chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            raise ValueError(
                f"without chunked prefill max_num_tokens ({self.max_num_batched_tokens}) must be at least "
                f"max_seq_len ({self.max_model_len}) so that every prompt fits in one step"
            )

    @property
    def capacity_scheduler_policy(self) -> CapacitySchedulerPolicy:
        return CapacitySchedulerPolicy[self.capacity_policy.upper()]

    @classmethod
    def from_build(cls, build: BuildConfig, model: ModelConfig,
                   scheduling: Optional[SchedulerConfig] = None) -> "ResolvedSchedulerConfig":
        build.validate()  # its fields may have been set one by one since construction
        policy = DEFAULT_CAPACITY_POLICY
        if scheduling is not None:
            scheduling.validate()
            policy = scheduling.capacity_scheduler_policy
            if scheduling.context_chunking_policy is not None and not build.enable_chunked_prefill:
                raise ValueError(f"context_chunking_policy={scheduling.context_chunking_policy.value} needs "
                                 "enable_chunked_prefill=True (prompts are not chunked without it)")
        max_len = build.max_seq_len or model.max_position_embeddings
        return cls(max_num_seqs=build.max_batch_size, max_num_batched_tokens=build.max_num_tokens,
                   max_model_len=max_len, enable_chunked_prefill=build.enable_chunked_prefill,
                   capacity_policy=policy.value.lower(), max_beam_width=build.max_beam_width)


@dataclass(frozen=True)
class CacheConfig:
    """The KV cache as planned: block size and how many blocks fit."""

    block_size: int
    num_blocks: int
    enable_prefix_caching: bool = True
    dtype: torch.dtype = field(default=torch.float32)

    def __post_init__(self):
        if self.num_blocks <= 0:
            raise ValueError(f"the KV cache must hold at least one block, planned {self.num_blocks}")
