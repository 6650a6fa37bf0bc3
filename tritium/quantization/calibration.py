"""Calibration: run the float model once over calibration text and apply what the algorithm needs.

    samples = calibration_samples(tokenizer, CalibConfig(), vocab_size)   # token id lists
    calibrate(model, model_config, quant_config, samples)                 # before quantizing

One pass (each sample a prefill through the torch attention backend, progress bar) records, per
quantized linear layer, what its input looked like (max |x|; per-channel max and mean |x|; a few
hundred input rows), and per attention layer the max |k| and |v| of each KV head. Then:
  FP8                  static activation scale = max |x| / 448 (layer.input_amax)
  W8A8_SQ_PER_CHANNEL  SmoothQuant scales folded into norms / linears (smoothquant.py)
  W4A16_AWQ            AWQ scale search, folded, and clip search (awq.py)
  W4A16_GPTQ           GPTQ's error-compensating rounding from each input's X^T X (gptq.py; the
                       X^T X of a window of layers at a time, one more pass per window)
  KV cache FP8 / INT8  per-head scales = max / format max (attention layer kv_scale)
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from tritium.quantization.config import CalibConfig, QuantAlgo, QuantConfig

logger = logging.getLogger(__name__)

DEFAULT_CALIBRATION_TEXT = os.path.join(os.path.dirname(__file__), "data", "calibration.txt")
MAX_KEPT_ROWS = 512  # input rows kept per linear for AWQ's searches


def _read_texts(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"calibration file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        if not path.endswith(".jsonl"):
            return [f.read()]
        texts = []
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e})") from None
            text = item.get("text") if isinstance(item, dict) else None
            if not isinstance(text, str):
                raise ValueError(f'{path}:{n}: each line must be an object with a "text" string')
            texts.append(text)
        return texts


def calibration_samples(tokenizer, calib: CalibConfig, vocab_size: int) -> list[list[int]]:
    """Token id lists of calib_max_seq_length tokens (at most calib_batches of them), cut from the
    calibration text; random token ids (seeded) when there is no tokenizer (dummy weights)."""
    if tokenizer is None:
        logger.warning("no tokenizer: calibrating on random token ids (fine for benchmarks on dummy weights)")
        gen = torch.Generator().manual_seed(calib.random_seed)
        count = min(calib.calib_batches, 8)
        return torch.randint(0, vocab_size, (count, calib.calib_max_seq_length), generator=gen).tolist()
    path = calib.calib_dataset or DEFAULT_CALIBRATION_TEXT
    ids: list[int] = []
    for text in _read_texts(path):
        ids.extend(tokenizer.encode(text, add_special_tokens=False))
    if not ids:
        raise ValueError(f"calibration file {path} holds no text")
    size = calib.calib_max_seq_length
    samples = [ids[i:i + size] for i in range(0, len(ids), size)][:calib.calib_batches]
    samples = [s for s in samples if len(s) >= min(16, size)] or samples[:1]
    where = calib.calib_dataset or "tritium's own calibration text"
    if len(samples) < calib.calib_batches:
        logger.warning("calibration: %d samples of up to %d tokens (%d asked for): %s holds only %d tokens; "
                       "give a longer --calib-file for more", len(samples), size, calib.calib_batches, where, len(ids))
    else:
        logger.info("calibration: %d samples of up to %d tokens from %s", len(samples), size, where)
    return samples


@dataclass
class InputStats:
    """What a linear layer's input looked like over the calibration text."""

    amax: torch.Tensor  # [] max |x|
    channel_amax: torch.Tensor  # [K] max |x| per input channel
    channel_abs_sum: torch.Tensor  # [K] sum |x| per input channel
    num_rows: int = 0
    rows: list[torch.Tensor] = field(default_factory=list)  # kept input rows, float32
    xtx: Optional[torch.Tensor] = None  # [K, K] sum of x^T x (GPTQ's Hessian, up to a factor)

    @property
    def channel_mean(self) -> torch.Tensor:
        return self.channel_abs_sum / max(self.num_rows, 1)

    def kept_rows(self) -> torch.Tensor:
        return torch.cat(self.rows)[:MAX_KEPT_ROWS]  # [n, K]


class _ObservingMethod:
    """Stands in for a quantized layer's method during calibration: records the input, computes
    in float with the loaded weight."""

    def __init__(self, stats: dict[str, InputStats], keep_rows: bool, xtx_for: frozenset[str]):
        self.stats, self.keep_rows, self.xtx_for = stats, keep_rows, xtx_for

    def apply(self, layer, x, bias):
        x2 = x.reshape(-1, x.shape[-1]).float()  # [T, K]
        a = x2.abs()
        s = self.stats.get(layer.prefix)
        if s is None:
            s = self.stats[layer.prefix] = InputStats(a.max(), a.amax(0), torch.zeros_like(a[0]))
        else:
            s.amax = torch.maximum(s.amax, a.max())
            s.channel_amax = torch.maximum(s.channel_amax, a.amax(0))
        s.channel_abs_sum += a.sum(0)
        s.num_rows += x2.shape[0]
        kept = sum(r.shape[0] for r in s.rows)
        if self.keep_rows and kept < MAX_KEPT_ROWS:
            s.rows.append(x2[:MAX_KEPT_ROWS - kept].clone())
        if layer.prefix in self.xtx_for:
            s.xtx = x2.t() @ x2 if s.xtx is None else s.xtx.addmm_(x2.t(), x2)  # [K, K]
        return torch.nn.functional.linear(x, layer.weight, bias)


def quantized_linears(model: nn.Module) -> list[nn.Module]:
    from tritium.quantization.base import QuantizedLinearMethod

    return [m for m in model.modules() if isinstance(getattr(m, "linear_method", None), QuantizedLinearMethod)]


def _attention_layers(model: nn.Module) -> list[nn.Module]:
    from tritium.layers.attention import Attention

    return [m for m in model.modules() if isinstance(m, Attention) and m.kv_cache_dtype is not None]


@torch.no_grad()
def collect_statistics(model: nn.Module, model_config, samples: list[list[int]], keep_rows: bool = False,
                       xtx_for: frozenset[str] = frozenset()
                       ) -> tuple[dict[str, InputStats], dict[int, torch.Tensor]]:
    """One float pass over `samples`: ({linear prefix: InputStats}, {layer index: kv amax [2, kvh]});
    X^T X only for the linears named in xtx_for ([K, K] float32 each)."""
    from tritium.attention.torch_backend import TorchAttentionBackend

    linears, attns = quantized_linears(model), _attention_layers(model)
    stats: dict[str, InputStats] = {}
    kv_amax: dict[int, torch.Tensor] = {}
    observer = _ObservingMethod(stats, keep_rows, xtx_for)
    methods = {m: m.linear_method for m in linears}
    scales = {a: a.kv_scale for a in attns}

    def record_kv(attn, args):
        _, k, v = args[:3]  # k, v of T tokens, already rotated (the torch backend fuses no RoPE)
        t = k.shape[0]
        kv = torch.stack((k.reshape(t, attn.num_kv_heads, -1), v.reshape(t, attn.num_kv_heads, -1))).float().abs()
        amax = kv.amax(dim=(1, 3))  # [2, kvh]
        kv_amax[attn.layer_idx] = torch.maximum(kv_amax.get(attn.layer_idx, amax), amax)

    hooks = [a.register_forward_pre_hook(record_kv) for a in attns]
    try:
        for m in linears:
            m.linear_method = observer
        for a in attns:
            a.kv_scale = None  # the calibration pass keeps k / v in the model dtype
        backend = TorchAttentionBackend()
        for ids in tqdm(samples, desc="Calibrating", unit="sample"):
            _prefill(model, model_config, ids, backend)
    finally:
        for h in hooks:
            h.remove()
        for m, method in methods.items():
            m.linear_method = method
        for a, s in scales.items():
            a.kv_scale = s
    return stats, kv_amax


def _prefill(model: nn.Module, model_config, ids: list[int], backend) -> None:
    """One request's prefill through a scratch paged KV cache in the model dtype."""
    from tritium.attention.backend import AttentionMetadata, ForwardContext, forward_context

    device = next(model.parameters()).device
    n, block_size = len(ids), 16
    num_blocks = -(-n // block_size)
    caches = [torch.zeros(2, num_blocks, block_size, model_config.num_key_value_heads, model_config.head_dim,
                          dtype=model_config.dtype, device=device) for _ in range(model_config.num_hidden_layers)]
    meta = AttentionMetadata(
        num_actual_tokens=n, query_start_loc=torch.tensor([0, n], dtype=torch.int32, device=device),
        seq_lens=torch.tensor([n], dtype=torch.int32, device=device),
        block_tables=torch.arange(num_blocks, dtype=torch.int32, device=device)[None, :],
        slot_mapping=torch.arange(n, device=device), max_query_len=n, max_seq_len=n,
        query_start_loc_cpu=[0, n], seq_lens_cpu=[n])
    with forward_context(ForwardContext(meta, caches, backend)):
        model(torch.tensor(ids, device=device), torch.arange(n, device=device))


@torch.no_grad()
def calibrate(model: nn.Module, model_config, config: QuantConfig, samples: list[list[int]]) -> None:
    """Run calibration for `config` on the loaded float model (before process_weights_after_loading)."""
    from tritium.quantization.gptq import hessian_windows

    algo = config.quant_algo
    windows = hessian_windows(quantized_linears(model)) if algo == QuantAlgo.W4A16_GPTQ else [[]]
    stats, kv_amax = collect_statistics(model, model_config, samples, keep_rows=algo == QuantAlgo.W4A16_AWQ,
                                        xtx_for=frozenset(m.prefix for m in windows[0]))
    if algo == QuantAlgo.FP8:
        for m in quantized_linears(model):
            m.input_amax = stats[m.prefix].amax
    elif algo == QuantAlgo.W8A8_SQ_PER_CHANNEL:
        from tritium.quantization.smoothquant import apply_smoothquant

        apply_smoothquant(model, stats, config.smoothquant_val)
    elif algo == QuantAlgo.W4A16_AWQ:
        from tritium.quantization.awq import apply_awq

        apply_awq(model, model_config, stats, config.group_size)
    elif algo == QuantAlgo.W4A16_GPTQ:
        from tritium.quantization.gptq import apply_gptq

        apply_gptq(windows, stats, config.group_size,
                   lambda prefixes: collect_statistics(model, model_config, samples, xtx_for=prefixes)[0])
    if kv_amax:
        from tritium.quantization.kv_cache import kv_scale_from_amax

        for attn in _attention_layers(model):
            attn.kv_scale.copy_(kv_scale_from_amax(kv_amax[attn.layer_idx], attn.kv_cache_dtype))


def needs_calibration(config: Optional[QuantConfig], serialized: bool) -> bool:
    return config is not None and not serialized and config.needs_calibration
