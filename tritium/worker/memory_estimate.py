"""The memory plan from config.json alone (no weights loaded): `tritium build --dry-run`.

    weights      embeddings + LM head in the model dtype, every decoder linear at its quantized
                 size (FP8 / int8: 1 byte a weight + a float32 scale per output channel; int4:
                 half a byte + a scale and a zero per group of group_size inputs), norms
    activations  one step of max_num_tokens: the residual stream and normed input, the fused
                 q/k/v output, attention output, gate/up output and SiLU product, in the model
                 dtype, plus float32 logits of max_batch_size rows (the profiled figure on a GPU
                 is measured instead; this is its analytic counterpart)
    CUDA graphs  one decode step's activations at the largest captured batch and its float32 logits
    KV cache     free_gpu_memory_fraction of what is left, at 2 x layers x kv_heads x head_dim x
                 dtype bytes a token (1 byte for FP8 / INT8 caches: twice the tokens of bfloat16)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from tritium.config import ModelConfig
from tritium.quantization.config import FP8_ALGOS, INT4_ALGOS, QuantConfig
from tritium.quantization.quant_utils import padded_k

_CAPTURE_MAX = 512  # the largest CUDA-graph batch (worker/cuda_graph.py)


def parse_size(text: str) -> int:
    """'80GiB', '141GB', '512MiB', '1e9' -> bytes."""
    units = {"tib": 2**40, "gib": 2**30, "mib": 2**20, "kib": 2**10, "tb": 10**12, "gb": 10**9, "mb": 10**6,
             "kb": 10**3, "b": 1}
    t = text.strip().lower().replace(" ", "")
    for unit, mult in units.items():
        if t.endswith(unit):
            try:
                return int(float(t[:-len(unit)]) * mult)
            except ValueError:
                break
    try:
        return int(float(t))
    except ValueError:
        raise ValueError(f"cannot read a memory size from {text!r}; write e.g. 80GiB, 141GB or 512MiB") from None


def _linear_bytes(n: int, k: int, quant: Optional[QuantConfig], dtype_bytes: int) -> int:
    algo = quant.quant_algo if quant is not None else None
    if algo is None:
        return n * k * dtype_bytes
    if algo in INT4_ALGOS:
        kp = padded_k(k, quant.group_size)
        return n * kp // 2 + n * (kp // quant.group_size) * (dtype_bytes + 1)
    return n * k + 4 * n + (4 if algo in FP8_ALGOS else 0)  # 1-byte weights, float32 scales


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    activations: int
    cuda_graphs: int
    kv_bytes_per_token: int
    kv_cache: int
    kv_tokens: int
    max_seq_len: int

    @property
    def sequences_at_max_seq_len(self) -> int:
        return self.kv_tokens // self.max_seq_len

    def describe(self, gpu_memory: int) -> str:
        gib = 2**30
        rows = [("GPU memory", gpu_memory / gib), ("weights", self.weights / gib),
                ("activations (one step)", self.activations / gib), ("CUDA graph pool", self.cuda_graphs / gib),
                ("KV cache", self.kv_cache / gib)]
        lines = [f"  {name:<24} {value:8.2f} GiB" for name, value in rows]
        lines.append(f"  KV cache capacity        {self.kv_tokens} tokens ({self.kv_bytes_per_token} bytes each)")
        lines.append(f"  sequences of {self.max_seq_len} tokens at once: {self.sequences_at_max_seq_len}")
        return "\n".join(lines)


def estimate_memory(model: ModelConfig, gpu_memory: int, max_batch_size: int, max_num_tokens: int,
                    max_seq_len: Optional[int], quant: Optional[QuantConfig] = None,
                    free_gpu_memory_fraction: float = 0.9, tokens_per_block: int = 16,
                    cuda_graphs: bool = True) -> MemoryEstimate:
    """The plan a GPU of `gpu_memory` bytes would get (model.dtype is the weights' dtype)."""
    from tritium.quantization import KV_CACHE_DTYPES

    b = torch.empty((), dtype=model.dtype).element_size()
    h, i, layers = model.hidden_size, model.intermediate_size, model.num_hidden_layers
    qkv = model.q_size + 2 * model.kv_size
    per_layer = (_linear_bytes(qkv, h, quant, b) + _linear_bytes(h, model.q_size, quant, b)
                 + _linear_bytes(2 * i, h, quant, b) + _linear_bytes(h, i, quant, b) + 2 * h * b)
    embed = model.vocab_size * h * b
    weights = layers * per_layer + embed * (1 if model.tie_word_embeddings else 2) + h * b

    def step(tokens: int, rows: int) -> int:
        return tokens * (2 * h + qkv + model.q_size + 2 * i + i) * b + rows * model.vocab_size * (4 + b)

    max_len = max_seq_len or model.max_position_embeddings
    tokens = min(max_num_tokens, max_len)
    activations = step(tokens, min(max_batch_size, tokens))
    top = min(max_batch_size, _CAPTURE_MAX)
    graphs = step(top, top) if cuda_graphs else 0
    kv_dtype = KV_CACHE_DTYPES.get(quant.kv_cache_quant_algo) if quant is not None else None
    kv_elem = torch.empty((), dtype=kv_dtype or model.dtype).element_size()
    per_token = 2 * layers * model.kv_size * kv_elem
    free = max(gpu_memory - weights - activations - graphs, 0)
    kv_tokens = int(free * free_gpu_memory_fraction) // (per_token * tokens_per_block) * tokens_per_block
    kv_tokens = min(kv_tokens, max_batch_size * -(-max_len // tokens_per_block) * tokens_per_block)
    return MemoryEstimate(weights=weights, activations=activations, cuda_graphs=graphs, kv_bytes_per_token=per_token,
                          kv_cache=kv_tokens * per_token, kv_tokens=kv_tokens, max_seq_len=max_len)
