"""QuantConfig / QuantAlgo / CalibConfig with TensorRT-LLM's names, and what this device supports.

    LLM(model, quant_config=QuantConfig(quant_algo="FP8", kv_cache_quant_algo="FP8"))

`quant_algo` and `kv_cache_quant_algo` take a QuantAlgo or its name (any case). Every name
TensorRT-LLM knows is a member, so a script that names one tritium does not implement gets a
clear error listing what this device supports instead of an AttributeError or a silent fallback.
"""
from __future__ import annotations

import enum
import fnmatch
from dataclasses import dataclass
from typing import Any, Optional, Union


class QuantAlgo(str, enum.Enum):
    """TensorRT-LLM's quantization algorithm names (tensorrt_llm.quantization.QuantAlgo)."""

    W8A16 = "W8A16"
    W4A16 = "W4A16"
    W4A16_AWQ = "W4A16_AWQ"
    W4A16_GPTQ = "W4A16_GPTQ"
    W8A16_GPTQ = "W8A16_GPTQ"
    W4A8_AWQ = "W4A8_AWQ"
    W8A8_SQ_PER_CHANNEL = "W8A8_SQ_PER_CHANNEL"
    W8A8_SQ_PER_TENSOR_PLUGIN = "W8A8_SQ_PER_TENSOR_PLUGIN"
    W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN = "W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN"
    W8A8_SQ_PER_CHANNEL_PER_TENSOR_PLUGIN = "W8A8_SQ_PER_CHANNEL_PER_TENSOR_PLUGIN"
    W8A8_SQ_PER_TENSOR_PER_TOKEN_PLUGIN = "W8A8_SQ_PER_TENSOR_PER_TOKEN_PLUGIN"
    W4A8_QSERVE_PER_GROUP = "W4A8_QSERVE_PER_GROUP"
    W4A8_QSERVE_PER_CHANNEL = "W4A8_QSERVE_PER_CHANNEL"
    FP8 = "FP8"
    FP8_PER_CHANNEL_PER_TOKEN = "FP8_PER_CHANNEL_PER_TOKEN"
    FP8_BLOCK_SCALES = "FP8_BLOCK_SCALES"
    INT8 = "INT8"
    MIXED_PRECISION = "MIXED_PRECISION"
    NVFP4 = "NVFP4"
    W4A8_NVFP4_FP8 = "W4A8_NVFP4_FP8"
    W4A8_MXFP4_FP8 = "W4A8_MXFP4_FP8"
    W4A8_MXFP4_MXFP8 = "W4A8_MXFP4_MXFP8"
    W4A16_MXFP4 = "W4A16_MXFP4"
    NO_QUANT = "NO_QUANT"

    def __str__(self) -> str:
        return self.value


# What tritium implements for weights (quant_algo) and for the KV cache (kv_cache_quant_algo).
WEIGHT_ALGOS = (QuantAlgo.FP8, QuantAlgo.FP8_PER_CHANNEL_PER_TOKEN, QuantAlgo.W8A16, QuantAlgo.W4A16,
                QuantAlgo.W4A16_AWQ, QuantAlgo.W4A16_GPTQ, QuantAlgo.W8A8_SQ_PER_CHANNEL)
KV_CACHE_ALGOS = (QuantAlgo.FP8, QuantAlgo.INT8)
FP8_ALGOS = (QuantAlgo.FP8, QuantAlgo.FP8_PER_CHANNEL_PER_TOKEN)
INT4_ALGOS = (QuantAlgo.W4A16, QuantAlgo.W4A16_AWQ, QuantAlgo.W4A16_GPTQ)
# Algorithms whose build step runs the model on calibration text.
CALIBRATED_ALGOS = (QuantAlgo.FP8, QuantAlgo.W4A16_AWQ, QuantAlgo.W4A16_GPTQ, QuantAlgo.W8A8_SQ_PER_CHANNEL)
FP8_MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (sm_89) and Hopper (sm_90)

# Fused tritium projections and the Hugging Face modules they hold (for exclude_modules patterns).
FUSED_MODULES = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def parse_algo(value: Union[None, str, QuantAlgo], what: str, allowed: tuple[QuantAlgo, ...]) -> Optional[QuantAlgo]:
    """A QuantAlgo from a member or its name (case-insensitive); None / NO_QUANT -> None."""
    if value is None:
        return None
    if isinstance(value, str) and not isinstance(value, QuantAlgo):
        try:
            value = QuantAlgo(value.strip().upper())
        except ValueError:
            raise ValueError(f"{what}={value!r} is not a quantization algorithm; tritium supports "
                             f"{', '.join(a.value for a in allowed)}") from None
    if not isinstance(value, QuantAlgo):
        raise ValueError(f"{what} must be a QuantAlgo or its name, got {type(value).__name__}")
    if value == QuantAlgo.NO_QUANT:
        return None
    if value not in allowed:
        raise ValueError(f"{what}={value.value} is not implemented in tritium; supported: "
                         f"{', '.join(a.value for a in allowed)}")
    return value


@dataclass
class QuantConfig:
    """TensorRT-LLM's QuantConfig fields that tritium implements.

    quant_algo: weights (and, for FP8 / W8A8, activations) of every linear layer except the
        excluded ones; the embeddings and the LM head always stay in the model dtype.
    kv_cache_quant_algo: FP8 (e4m3) or INT8 KV cache, one scale per KV head of each layer.
    group_size: input channels sharing one scale and zero point (int4 methods).
    smoothquant_val: SmoothQuant's migration strength alpha (W8A8_SQ_PER_CHANNEL).
    exclude_modules: fnmatch patterns of module names kept unquantized, in Hugging Face's names
        ("*.down_proj", "model.layers.0.*") or tritium's fused ones ("*.qkv_proj").
    """

    quant_algo: Union[None, str, QuantAlgo] = None
    kv_cache_quant_algo: Union[None, str, QuantAlgo] = None
    group_size: int = 128
    smoothquant_val: float = 0.5
    exclude_modules: Optional[list[str]] = None

    def __post_init__(self):
        self.quant_algo = parse_algo(self.quant_algo, "quant_algo", WEIGHT_ALGOS)
        self.kv_cache_quant_algo = parse_algo(self.kv_cache_quant_algo, "kv_cache_quant_algo", KV_CACHE_ALGOS)
        if not isinstance(self.group_size, int) or isinstance(self.group_size, bool) or self.group_size < 32 \
                or self.group_size % 32:
            raise ValueError(f"group_size must be a positive multiple of 32, got {self.group_size!r}")
        if not 0.0 <= float(self.smoothquant_val) <= 1.0:
            raise ValueError(f"smoothquant_val must be in [0, 1], got {self.smoothquant_val!r}")
        if self.exclude_modules is not None:
            if isinstance(self.exclude_modules, str) or not all(isinstance(p, str) for p in self.exclude_modules):
                raise ValueError(f"exclude_modules must be a list of module name patterns, got {self.exclude_modules!r}")
            self.exclude_modules = list(self.exclude_modules)

    @property
    def is_quantized(self) -> bool:
        return self.quant_algo is not None or self.kv_cache_quant_algo is not None

    @property
    def needs_calibration(self) -> bool:
        """The build step runs calibration text through the model (static scales, AWQ, SmoothQuant,
        KV cache scales)."""
        return self.quant_algo in CALIBRATED_ALGOS or self.kv_cache_quant_algo is not None

    def is_excluded(self, prefix: str) -> bool:
        """Whether the linear layer `prefix` (tritium's name, e.g. model.layers.0.self_attn.qkv_proj)
        stays unquantized: a pattern matches it or any Hugging Face module fused into it."""
        if not self.exclude_modules:
            return False
        parent, _, leaf = prefix.rpartition(".")
        names = [prefix] + [f"{parent}.{hf}" if parent else hf for hf in FUSED_MODULES.get(leaf, ())]
        return any(fnmatch.fnmatchcase(n, p) or fnmatch.fnmatchcase(n.rpartition(".")[2], p)
                   for n in names for p in self.exclude_modules)

    def to_dict(self) -> dict[str, Any]:
        return {"quant_algo": self.quant_algo.value if self.quant_algo else None,
                "kv_cache_quant_algo": self.kv_cache_quant_algo.value if self.kv_cache_quant_algo else None,
                "group_size": self.group_size, "smoothquant_val": self.smoothquant_val,
                "exclude_modules": self.exclude_modules}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown QuantConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class CalibConfig:
    """Calibration settings (TensorRT-LLM's names). calib_dataset: a text file (.txt: plain text,
    cut into samples; .jsonl: one {"text": ...} per line) or None for tritium's own English text;
    calib_batches: the number of samples; calib_max_seq_length: tokens per sample."""

    calib_dataset: Optional[str] = None
    calib_batches: int = 64
    calib_max_seq_length: int = 512
    random_seed: int = 1234

    def __post_init__(self):
        for name, flag in (("calib_batches", "--calib-size"), ("calib_max_seq_length", "--calib-max-seq-len")):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} ({flag}) must be a positive integer, got {v!r}")


def device_support_error(config: QuantConfig, device_type: str,
                         capability: Optional[tuple[int, int]] = None) -> Optional[str]:
    """Why `config` cannot run on this device (None if it can). CPUs run every method (emulated:
    correct, slow); FP8 W8A8 needs FP8 tensor cores (compute capability 8.9+) on a GPU."""
    if device_type != "cuda" or config.quant_algo not in FP8_ALGOS:
        return None
    if capability is not None and tuple(capability) < FP8_MIN_CAPABILITY:
        supported = [a.value for a in WEIGHT_ALGOS if a not in FP8_ALGOS]
        return (f"quant_algo={config.quant_algo.value} needs FP8 tensor cores (compute capability "
                f"{FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]}+, Ada or Hopper); this GPU is "
                f"{capability[0]}.{capability[1]}. Supported here: {', '.join(supported)}")
    return None


def check_device_support(config: QuantConfig, device) -> None:
    """Raise ValueError if `config` cannot run on torch device `device`."""
    import torch

    cap = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    problem = device_support_error(config, device.type, cap)
    if problem:
        raise ValueError(problem)
