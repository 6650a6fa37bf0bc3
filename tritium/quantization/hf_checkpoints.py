"""Pre-quantized Hugging Face checkpoints, loaded as they are (no re-quantization):

  ModelOpt FP8          hf_quant_config.json {"quantization": {"quant_algo": "FP8",
                        "kv_cache_quant_algo": "FP8" | null, "exclude_modules": [...]}}; per module
                        weight (float8_e4m3fn [N, K]), weight_scale and input_scale (float32
                        scalars); KV scales as self_attn.{k_proj.k_scale, v_proj.v_scale}
  compressed-tensors    config.json quantization_config {"quant_method": "compressed-tensors",
  FP8                   "format": "float-quantized", "config_groups": {...}}: weights 8-bit float
                        per tensor (weight_scale [1]) with static per-tensor input_scale -> FP8, or
                        per channel (weight_scale [N, 1]) with dynamic per-token activations ->
                        FP8_PER_CHANNEL_PER_TOKEN; KV scales as self_attn.{k_scale, v_scale}
  AWQ (autoawq GEMM)    quantization_config {"quant_method": "awq", "bits": 4, "version": "gemm",
                        "zero_point": true}: qweight int32 [K, N/8] and qzeros int32 [K/G, N/8],
                        8 nibbles a word in the order (0, 2, 4, 6, 1, 3, 5, 7) of 8 adjacent
                        output channels; scales [K/G, N]; w = (q - z) * s
  GPTQ (auto-gptq,      quantization_config {"quant_method": "gptq", "bits": 4, "desc_act": false}:
  gptqmodel)            qweight int32 [K/8, N] (nibble j of word [i, n] = input 8i + j), qzeros
                        int32 [K/G, N/8] (nibble j = output 8c + j) holding zero - 1 (checkpoint
                        format "gptq"; "gptq_v2" holds the zero itself), scales [K/G, N], g_idx [K];
                        w = (q - z) * s

Each is converted tensor by tensor into tritium's serialized layout (quant_utils.py), under the
Hugging Face module names, so the model's weight loaders fuse q/k/v and gate/up as usual.
Anything else (other methods, act-order GPTQ, symmetric AWQ, block-scaled FP8) is a clear error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch

from tritium.quantization.config import QuantAlgo, QuantConfig
from tritium.quantization.quant_utils import FP8_DTYPE, pack_int4

MODELOPT_CONFIG = "hf_quant_config.json"
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble i of an AWQ word holds channel AWQ_ORDER[i] of its 8
SUPPORTED = "ModelOpt FP8, compressed-tensors FP8, AWQ (GEMM) int4, GPTQ int4"


def _fail(path: str, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem}; tritium loads pre-quantized checkpoints in these formats: {SUPPORTED}")


@dataclass
class CheckpointQuantization:
    """A pre-quantized checkpoint's format and the QuantConfig it amounts to."""

    format: str  # modelopt | compressed-tensors | awq | gptq
    quant_config: QuantConfig
    zero_offset: int = 0  # GPTQ "gptq" format stores zero - 1
    kv_scales: dict[int, dict[str, float]] = field(default_factory=dict)  # layer -> {"k": s, "v": s}

    def convert(self, weights: Iterator[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
        """The checkpoint's (name, tensor) stream in tritium's serialized layout; KV cache scales
        are collected in self.kv_scales instead."""
        self.kv_scales.clear()
        pending: dict[str, dict[str, torch.Tensor]] = {}
        for name, tensor in weights:
            if self._take_kv_scale(name, tensor):
                continue
            module, _, part = name.rpartition(".")
            parts = self._parts(tensor, part)
            if parts is None:
                yield name, tensor
                continue
            have = pending.setdefault(module, {})
            have[part] = tensor
            if all(p in have for p in parts):
                yield from self._convert_module(module, pending.pop(module))
        for module, have in pending.items():
            need = self._parts(next(iter(have.values())), next(iter(have)))
            missing = sorted(set(need) - set(have))
            raise ValueError(f"quantized module {module} lacks {', '.join(module + '.' + m for m in missing)}")

    # ---- per format ------------------------------------------------------------------------
    def _parts(self, tensor: torch.Tensor, part: str) -> Optional[tuple[str, ...]]:
        """The tensors a quantized module needs, if `part` is one of them (else None: pass it on)."""
        if self.format in ("awq", "gptq"):
            if part == "g_idx" and self.format == "gptq":
                return ("g_idx",)
            return ("qweight", "qzeros", "scales") if part in ("qweight", "qzeros", "scales") else None
        static = self.quant_config.quant_algo == QuantAlgo.FP8
        need = ("weight", "weight_scale") + (("input_scale",) if static else ())
        if part == "weight" and tensor.dtype != FP8_DTYPE:
            return None  # an unquantized (excluded) module
        return need if part in need else None

    def _convert_module(self, module: str, t: dict[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
        if self.format in ("awq", "gptq"):
            if set(t) == {"g_idx"}:
                self._check_g_idx(module, t["g_idx"])
                return
            yield from self._convert_int4(module, t)
            return
        w = t["weight"]
        yield f"{module}.weight", w
        yield f"{module}.weight_scale", t["weight_scale"].float().reshape(-1).expand(w.shape[0]).contiguous()
        if "input_scale" in t:
            yield f"{module}.input_scale", t["input_scale"].float().reshape(1)

    def _convert_int4(self, module: str, t: dict[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
        group = self.quant_config.group_size
        scales = t["scales"]  # [K/G, N]
        if self.format == "awq":
            q = unpack_awq(t["qweight"])  # [K, N]
            zero = unpack_awq(t["qzeros"])  # [K/G, N]
        else:
            q = unpack_gptq_rows(t["qweight"])  # [K, N]
            # gptq v1 stores zero - 1: a stored 15 is a zero point of 16, which the uint8 zeros hold
            zero = unpack_gptq_cols(t["qzeros"]).int() + self.zero_offset  # [K/G, N], 0..16
        k, n = q.shape
        if scales.shape != (k // group, n) or zero.shape != scales.shape or k % group:
            raise ValueError(f"{module}: qweight {tuple(t['qweight'].shape)}, qzeros {tuple(t['qzeros'].shape)} and "
                             f"scales {tuple(scales.shape)} do not fit group size {group}")
        yield f"{module}.weight_packed", pack_int4(q.t().contiguous(), group)  # [N, K/2]
        yield f"{module}.weight_scale", scales.t().contiguous()  # [N, K/G]
        yield f"{module}.weight_zero", zero.t().to(torch.uint8).contiguous()  # [N, K/G]

    def _check_g_idx(self, module: str, g_idx: torch.Tensor) -> None:
        expected = torch.arange(g_idx.numel()) // self.quant_config.group_size
        if not torch.equal(g_idx.long().cpu(), expected):
            raise ValueError(f"{module}.g_idx is not in order (a desc_act / act-order GPTQ checkpoint): tritium's "
                             "int4 kernels need contiguous groups; quantize without desc_act")

    def _take_kv_scale(self, name: str, tensor: torch.Tensor) -> bool:
        """self_attn.k_proj.k_scale / self_attn.k_scale (v likewise; kv_scale for both)."""
        for suffix, which in ((".k_scale", "k"), (".v_scale", "v"), (".kv_scale", "kv")):  # k_proj.k_scale too
            if name.endswith(suffix):
                layer = _layer_index(name)
                for w in which:
                    self.kv_scales.setdefault(layer, {})[w] = float(tensor.float().max())
                return True
        return False


def _layer_index(name: str) -> int:
    parts = name.split(".")
    try:
        return int(parts[parts.index("layers") + 1])
    except (ValueError, IndexError):
        raise ValueError(f"KV cache scale {name!r} names no decoder layer") from None


# ---- packings --------------------------------------------------------------------------------
def _nibbles(words: torch.Tensor) -> torch.Tensor:
    """int32 [..., W] -> uint8 [..., W, 8]: nibble i of each word (bits 4i..4i+3)."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    return ((words.int()[..., None] >> shifts) & 0xF).to(torch.uint8)


def unpack_awq(words: torch.Tensor) -> torch.Tensor:
    """AWQ GEMM int32 [R, C/8] -> uint8 [R, C]: nibble i is column 8c + AWQ_ORDER[i]."""
    nib = _nibbles(words)  # [R, C/8, 8]
    out = torch.empty_like(nib)
    out[..., list(AWQ_ORDER)] = nib
    return out.reshape(words.shape[0], -1)


def unpack_gptq_rows(words: torch.Tensor) -> torch.Tensor:
    """GPTQ qweight int32 [K/8, N] -> uint8 [K, N]: nibble j of word [i, n] is row 8i + j."""
    return _nibbles(words).permute(0, 2, 1).reshape(-1, words.shape[1])


def unpack_gptq_cols(words: torch.Tensor) -> torch.Tensor:
    """GPTQ qzeros int32 [R, N/8] -> uint8 [R, N]: nibble j of word [r, c] is column 8c + j."""
    return _nibbles(words).reshape(words.shape[0], -1)


# ---- detection -------------------------------------------------------------------------------
def detect(folder: str, hf_config: dict[str, Any]) -> Optional[CheckpointQuantization]:
    """The pre-quantized format of the checkpoint in `folder`, or None for a float checkpoint."""
    modelopt = os.path.join(folder, MODELOPT_CONFIG)
    if os.path.isfile(modelopt):
        from tritium.loader.source import read_json

        return _modelopt(modelopt, read_json(modelopt))
    qc = hf_config.get("quantization_config")
    if qc is None:
        return None
    where = os.path.join(folder, "config.json") + " quantization_config"
    method = str(qc.get("quant_method", "")).lower()
    if method == "compressed-tensors":
        return _compressed_tensors(where, qc)
    if method == "awq":
        return _awq(where, qc)
    if method == "gptq":
        return _gptq(where, qc)
    raise _fail(where, f"quant_method {method!r} is not supported")


def _modelopt(path: str, data: dict[str, Any]) -> CheckpointQuantization:
    q = data.get("quantization") or {}
    algo, kv = q.get("quant_algo"), q.get("kv_cache_quant_algo")
    if algo != "FP8":
        raise _fail(path, f"ModelOpt quant_algo {algo!r} is not supported (only FP8)")
    if kv not in (None, "FP8", "INT8"):
        raise _fail(path, f"ModelOpt kv_cache_quant_algo {kv!r} is not supported (FP8 or INT8)")
    return CheckpointQuantization("modelopt", QuantConfig(quant_algo=algo, kv_cache_quant_algo=kv,
                                                          exclude_modules=list(q.get("exclude_modules") or [])))


def _compressed_tensors(where: str, qc: dict[str, Any]) -> CheckpointQuantization:
    groups = list((qc.get("config_groups") or {}).values())
    if qc.get("format") != "float-quantized" or len(groups) != 1:
        raise _fail(where, f"compressed-tensors format {qc.get('format')!r} with {len(groups)} config group(s) is not "
                           "supported (one float-quantized FP8 group)")
    weights, acts = groups[0].get("weights") or {}, groups[0].get("input_activations") or {}
    fp8 = lambda s: s.get("num_bits") == 8 and s.get("type") == "float"  # noqa: E731
    if fp8(weights) and fp8(acts) and weights.get("strategy") == "tensor" and acts.get("strategy") == "tensor" \
            and not acts.get("dynamic"):
        algo = QuantAlgo.FP8
    elif fp8(weights) and fp8(acts) and weights.get("strategy") == "channel" and acts.get("strategy") == "token" \
            and acts.get("dynamic"):
        algo = QuantAlgo.FP8_PER_CHANNEL_PER_TOKEN
    else:
        raise _fail(where, f"compressed-tensors scheme weights={weights} input_activations={acts} is not supported "
                           "(FP8 per-tensor static, or per-channel weights with dynamic per-token activations)")
    ignore = list(qc.get("ignore") or [])
    if any(p.startswith("re:") for p in ignore):
        raise _fail(where, f"regular-expression ignore patterns {ignore} are not supported")
    kv_scheme = qc.get("kv_cache_scheme")
    kv = None
    if kv_scheme:
        if not fp8(kv_scheme):
            raise _fail(where, f"kv_cache_scheme {kv_scheme} is not supported (8-bit float)")
        kv = "FP8"
    return CheckpointQuantization("compressed-tensors",
                                  QuantConfig(quant_algo=algo, kv_cache_quant_algo=kv, exclude_modules=ignore))


def _int4_group(where: str, qc: dict[str, Any]) -> int:
    if qc.get("bits") != 4:
        raise _fail(where, f"bits={qc.get('bits')!r} is not supported (4)")
    group = qc.get("group_size")
    if not isinstance(group, int) or group < 32 or group % 32:
        raise _fail(where, f"group_size={group!r} is not supported (a multiple of 32; no per-channel -1)")
    return group


def _awq(where: str, qc: dict[str, Any]) -> CheckpointQuantization:
    group = _int4_group(where, qc)
    version = str(qc.get("version", "gemm")).lower()
    if version != "gemm" or qc.get("zero_point", True) is not True:
        raise _fail(where, f"AWQ version {version!r} zero_point={qc.get('zero_point')!r} is not supported "
                           "(GEMM packing with zero points)")
    return CheckpointQuantization("awq", QuantConfig(quant_algo=QuantAlgo.W4A16_AWQ, group_size=group))


def _gptq(where: str, qc: dict[str, Any]) -> CheckpointQuantization:
    group = _int4_group(where, qc)
    if qc.get("desc_act"):
        raise _fail(where, "desc_act=true (act-order) is not supported: tritium's int4 kernels need contiguous "
                           "groups")
    fmt = str(qc.get("checkpoint_format", "gptq")).lower()
    if fmt not in ("gptq", "gptq_v2"):
        raise _fail(where, f"GPTQ checkpoint_format {fmt!r} is not supported (gptq or gptq_v2)")
    return CheckpointQuantization("gptq", QuantConfig(quant_algo=QuantAlgo.W4A16_GPTQ, group_size=group),
                                  zero_offset=1 if fmt == "gptq" else 0)


def apply_kv_scales(model: torch.nn.Module, ckpt: CheckpointQuantization) -> None:
    """Set each quantized-cache attention layer's kv_scale [2, kvh] from the checkpoint's
    per-layer scales (one value for every head); layers without one keep 1.0."""
    from tritium.layers.attention import Attention

    for m in model.modules():
        if isinstance(m, Attention) and m.kv_cache_dtype is not None:
            scales = ckpt.kv_scales.get(m.layer_idx, {})
            for row, which in enumerate("kv"):
                if which in scales:
                    m.kv_scale[row].fill_(scales[which])
