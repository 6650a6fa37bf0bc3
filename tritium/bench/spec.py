"""EngineSpec: what a benchmark builds (model and engine limits), filled from the command line."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from tritium.bench.model_shapes import resolve_model_arg


@dataclass(frozen=True)
class EngineSpec:
    model: Optional[str] = None  # path, packaged shape name (with load_format='dummy'), None: embedded model
    tokenizer: Optional[str] = None
    dtype: str = "auto"
    load_format: str = "auto"
    device: Optional[str] = None
    max_batch_size: int = 256
    max_num_tokens: int = 8192
    max_seq_len: Optional[int] = None  # None: what the benchmark's longest request needs
    kv_cache_free_gpu_memory_fraction: float = 0.9
    kv_cache_max_tokens: Optional[int] = None
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    enforce_eager: bool = False  # GPU: no CUDA graphs
    capacity_scheduler_policy: Optional[str] = None  # max_utilization | guaranteed_no_evict; None: the engine's
    quant_config: Any = None  # quantization.QuantConfig (--quantization / --kv-cache-dtype)
    calib_config: Any = None  # quantization.CalibConfig
    extra_llm_api_options: Any = None  # the --extra-llm-api-options mapping (replaces the fields above it sets)
    extra_llm_api_options_path: Optional[str] = None

    @property
    def model_path(self) -> str:
        return resolve_model_arg(self.model, self.load_format)

    @property
    def model_name(self) -> str:
        return self.model or "embedded SmolLM2-135M-Instruct"

    def seq_len_for(self, needed: Optional[int]) -> Optional[int]:
        """max_seq_len: the user's if it holds the longest request (input + output), else that
        request's length; None (the model's) when lengths are unknown until text is tokenized."""
        if self.max_seq_len is None or needed is None:
            return needed
        if self.max_seq_len < needed:
            raise ValueError(f"--max-seq-len {self.max_seq_len} is shorter than the longest request "
                             f"({needed} tokens, input + output); raise it or leave it out")
        return self.max_seq_len
