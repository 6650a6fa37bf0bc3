"""The memory plan from config.json alone (no weights loaded): `tritium build --dry-run`. The KV
cache is then planned by the same functions as at start (memory_plan.py: gpu_kv_budget,
plan_kv_blocks, memory_plan_summary), from these estimates instead of measurements:

    weights      embeddings + LM head in the model dtype, every decoder linear at its quantized
                 size (FP8 / int8: 1 byte a weight + a float32 scale per output channel; int4:
                 half a byte + a scale and a zero per group of group_size inputs), biases and
                 norms: exactly what the loaded model's parameters hold
    activations  one step of max_num_tokens (several prompts when max_seq_len is shorter): the residual stream and normed input, the fused
                 q/k/v output, attention output, gate/up output and SiLU product, in the model
                 dtype, plus float32 logits of max_batch_size rows (the profiled figure on a GPU
                 is measured instead; this is its analytic counterpart)
    CUDA graphs  one step's activations at the largest graph (decode batch or prefill token count)
                 and both kinds' float32 logits buffers
    KV cache     free_gpu_memory_fraction of what is left, at 2 x layers x kv_heads x head_dim x
                 dtype bytes a token (1 byte for FP8 / INT8 caches: twice the tokens of bfloat16)
On a GPU the engine measures the activation peaks by profiling and reads the free memory from
the driver (CUDA's own context and allocator reserve some), so its figures differ a little.
"""
from __future__ import annotations

from typing import Optional

import torch

from tritium.config import BuildConfig, KvCacheConfig, ModelConfig, ResolvedSchedulerConfig
from tritium.quantization.config import INT4_ALGOS, QuantAlgo, QuantConfig
from tritium.quantization.quant_utils import padded_k
from tritium.worker.memory_plan import gpu_kv_budget, memory_plan_summary, plan_kv_blocks, profile_step_lengths

def parse_size(text: str) -> int:
    """'80GiB', '141GB', '512MiB', '1e9' -> bytes. A bare number below 1 MiB is refused: '80' was
    surely meant as GiB, not 80 bytes."""
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
        size = int(float(t))
    except ValueError:
        raise ValueError(f"cannot read a memory size from {text!r}; write e.g. 80GiB, 141GB or 512MiB") from None
    if size < 2**20:
        raise ValueError(f"a memory size of {text!r} would be {size} bytes; give a unit, e.g. {text.strip()}GiB")
    return size


def _linear_bytes(n: int, k: int, quant: Optional[QuantConfig], dtype_bytes: int) -> int:
    algo = quant.quant_algo if quant is not None else None
    if algo is None:
        return n * k * dtype_bytes
    if algo in INT4_ALGOS:
        kp = padded_k(k, quant.group_size)
        return n * kp // 2 + n * (kp // quant.group_size) * (dtype_bytes + 1)
    return n * k + 4 * n + (4 if algo == QuantAlgo.FP8 else 0)  # 1-byte weights, float32 scales (+ input scale)


def estimate_weight_bytes(model: ModelConfig, quant: Optional[QuantConfig] = None) -> int:
    """The bytes of the parameters a Llama-family model of `model` holds once loaded."""
    b = torch.empty((), dtype=model.dtype).element_size()
    h, i, layers = model.hidden_size, model.intermediate_size, model.num_hidden_layers
    qkv = model.q_size + 2 * model.kv_size
    per_layer = (_linear_bytes(qkv, h, quant, b) + _linear_bytes(h, model.q_size, quant, b)
                 + _linear_bytes(2 * i, h, quant, b) + _linear_bytes(h, i, quant, b) + 2 * h * b)
    if model.attention_bias:
        per_layer += qkv * b
    if model.qk_norm:
        per_layer += 2 * model.head_dim * b
    embed = model.vocab_size * h * b
    return layers * per_layer + embed * (1 if model.tie_word_embeddings else 2) + h * b


def _step_bytes(model: ModelConfig, tokens: int, rows: int) -> int:
    """Activations of one forward step of `tokens` tokens with `rows` rows of float32 logits."""
    b = torch.empty((), dtype=model.dtype).element_size()
    h, i = model.hidden_size, model.intermediate_size
    qkv = model.q_size + 2 * model.kv_size
    return tokens * (2 * h + qkv + model.q_size + 2 * i + i) * b + rows * model.vocab_size * (4 + b)


def estimate_memory(model: ModelConfig, gpu_memory: int, build: BuildConfig, kv: KvCacheConfig,
                    quant: Optional[QuantConfig] = None, cuda_graphs: bool = True,
                    cuda_graph_config=None) -> dict:
    """The memory plan (memory_plan_summary's dict) a GPU of `gpu_memory` bytes would get;
    cuda_graph_config: a config.CudaGraphConfig choosing the graphs, as the engine takes it."""
    from tritium.quantization import KV_CACHE_DTYPES
    from tritium.worker.cuda_graph import decode_graph_sizes
    from tritium.worker.prefill_graph import MAX_REQS as PREFILL_GRAPH_MAX_REQS, prefill_graph_sizes

    sched = ResolvedSchedulerConfig.from_build(build, model)
    weights = estimate_weight_bytes(model, quant)
    if weights >= gpu_memory:
        raise ValueError(f"the weights ({weights / 2**30:.2f} GiB) do not fit in a GPU of {gpu_memory / 2**30:.2f} GiB: "
                         "quantize them (--quantization FP8, W8A16, W4A16) or take a larger GPU")
    tokens = sum(profile_step_lengths(sched.max_num_batched_tokens, sched.max_model_len, sched.max_num_seqs))
    activations = _step_bytes(model, tokens, min(sched.max_num_seqs, tokens))
    top = decode_graph_sizes(sched.max_num_seqs, cuda_graph_config)[0][-1]  # the largest graph, as captured
    prefill = prefill_graph_sizes(sched.max_num_batched_tokens, sched.max_model_len)
    graph_rows = top + (PREFILL_GRAPH_MAX_REQS if prefill else 0)  # both kinds' logits buffers
    graphs = _step_bytes(model, max([top] + prefill), graph_rows) if cuda_graphs else 0
    kv_dtype = (KV_CACHE_DTYPES.get(quant.kv_cache_quant_algo) if quant is not None else None) or model.dtype
    budget, reason = gpu_kv_budget(gpu_memory - weights, activations + graphs, kv.free_gpu_memory_fraction)
    plan = plan_kv_blocks(model, sched, kv, kv_dtype, budget, reason)
    return memory_plan_summary(weights, plan, activations, graphs, sched.max_model_len)
