"""Quantization: QuantConfig (TensorRT-LLM's names), the linear methods that plug into
layers/linear.py, KV cache quantization, calibration, and checkpoint formats.

`ModelQuantization` is what a model definition is handed: it picks each linear layer's method by
name (exclude_modules), and says whether the checkpoint already holds the quantized layout
(serialized: a saved engine or a converted pre-quantized checkpoint) or is quantized at load.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from tritium.quantization.config import CalibConfig, QuantAlgo, QuantConfig

KV_CACHE_DTYPES = {QuantAlgo.FP8: torch.float8_e4m3fn, QuantAlgo.INT8: torch.int8}


@dataclass(frozen=True)
class ModelQuantization:
    config: QuantConfig
    serialized: bool = False

    def linear_method(self, prefix: str):
        """The LinearMethod for linear layer `prefix`, or None (unquantized)."""
        algo = self.config.quant_algo
        if algo is None or self.config.is_excluded(prefix):
            return None
        if algo in (QuantAlgo.FP8, QuantAlgo.FP8_PER_CHANNEL_PER_TOKEN):
            from tritium.quantization.fp8 import Fp8LinearMethod

            return Fp8LinearMethod(algo == QuantAlgo.FP8_PER_CHANNEL_PER_TOKEN, self.serialized)
        if algo == QuantAlgo.W8A16:
            from tritium.quantization.weight_only import Int8WeightOnlyMethod

            return Int8WeightOnlyMethod(self.serialized)
        if algo in (QuantAlgo.W4A16, QuantAlgo.W4A16_AWQ, QuantAlgo.W4A16_GPTQ):
            from tritium.quantization.weight_only import Int4WeightOnlyMethod

            return Int4WeightOnlyMethod(self.config.group_size, self.serialized)
        if algo == QuantAlgo.W8A8_SQ_PER_CHANNEL:
            from tritium.quantization.w8a8_int8 import Int8W8A8Method

            return Int8W8A8Method(self.serialized)
        raise AssertionError(f"no linear method for {algo}")  # QuantConfig admits only the above

    @property
    def kv_cache_dtype(self) -> Optional[torch.dtype]:
        return KV_CACHE_DTYPES.get(self.config.kv_cache_quant_algo)


__all__ = ["QuantAlgo", "QuantConfig", "CalibConfig", "ModelQuantization", "KV_CACHE_DTYPES"]
