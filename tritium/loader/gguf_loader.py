"""Read a llama.cpp GGUF file: an HF-style config from its metadata, and its tensors dequantized
to float32 under Hugging Face names.

Dequantization is `gguf.quants.dequantize` (F32, F16, BF16, Q4_0/1, Q5_0/1, Q8_0, the K-quants, ...).
llama.cpp's converter interleaves the rows of each q/k head for llama-architecture files (so its
RoPE can rotate adjacent pairs); we undo that so the weights match HF's rotate_half layout.
The tokenizer and chat template also live in the file; transformers reads them
(AutoTokenizer.from_pretrained(folder, gguf_file=name)).
"""
from __future__ import annotations

import functools
import logging
import os
import re
from typing import Any, Iterator, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

GGUF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
PERMUTED_QK_ARCHS = ("llama",)  # archs whose q/k rows llama.cpp interleaved

_TOP_LEVEL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")
_SKIPPED = ("rope_freqs.weight",)  # folded into the config's rope_scaling instead


def _reader(path: str):
    """GGUFReader for `path`. Parsing the metadata takes seconds (gguf-py reads every vocabulary
    string), so the config and the weights share one reader: the last is kept until
    iterate_gguf has read the tensors (keyed by the file's inode, size and mtime, so a replaced or
    edited file is parsed again)."""
    st = os.stat(path)
    return _cached_reader(os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=1)
def _cached_reader(path: str, inode: int, size: int, mtime_ns: int):
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except Exception as e:  # gguf-py reports a cut-off file as a numpy view/reshape error: say what it means
        raise ValueError(f"{path} is not a readable GGUF file (truncated or corrupt? {size} bytes): {e}") from None


def _field(reader, key: str, default: Any = None) -> Any:
    """A metadata value (str, number or list), or `default` when the key is absent."""
    field = reader.get_field(key)
    if field is None:
        return default
    if hasattr(field, "contents"):  # gguf >= 0.11
        return field.contents()
    from gguf import GGUFValueType

    def one(i: int, vtype) -> Any:
        part = field.parts[i]
        return bytes(part).decode("utf-8") if vtype == GGUFValueType.STRING else part.tolist()[0]

    if field.types[0] == GGUFValueType.ARRAY:
        return [one(i, field.types[-1]) for i in field.data]
    return one(field.data[0], field.types[0])


def gguf_to_hf_name(name: str) -> Optional[str]:
    """'blk.3.attn_q.weight' -> 'model.layers.3.self_attn.q_proj.weight'; None if unknown."""
    m = _BLOCK_RE.match(name)
    if m:
        part = _BLOCK.get(m.group(2))
        return f"model.layers.{m.group(1)}.{part}.{m.group(3)}" if part else None
    base, _, suffix = name.rpartition(".")
    return f"{_TOP_LEVEL[base]}.{suffix}" if base in _TOP_LEVEL else None


def unpermute_qk(w: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's per-head row interleave. Within a head, HF's rows are [first half | second
    half]; llama.cpp stores them pairwise (h0[0], h1[0], h0[1], h1[1], ...). View each head's rows
    as [head_dim/2, 2] and transpose to [2, head_dim/2] to get HF's order back. Works for weights
    [rows, cols] and biases [rows]."""
    rows = w.shape[0]
    half = rows // num_heads // 2
    return w.reshape(num_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _infer_llama3_scaling(freq_factors: np.ndarray, head_dim: int, theta: float) -> Optional[dict[str, Any]]:
    """Llama 3.x GGUFs store the llama3 RoPE scaling as per-frequency divisors (rope_freqs)
    instead of parameters. Recover the parameters if the standard Llama 3 ones reproduce it."""
    from tritium.layers.rotary import default_inv_freq, llama3_inv_freq

    guess = {"rope_type": "llama3", "factor": float(freq_factors.max()), "low_freq_factor": 1.0,
             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    base = default_inv_freq(head_dim, theta)
    ratio = (base / llama3_inv_freq(head_dim, theta, guess)).numpy()
    if ratio.shape == freq_factors.shape and np.allclose(ratio, freq_factors, rtol=1e-3):
        return guess
    logger.warning("GGUF rope_freqs do not match standard llama3 scaling; ignoring them (as transformers does)")
    return None


def gguf_hf_config(path: str) -> tuple[dict[str, Any], Optional[tuple[int, ...]]]:
    """(config.json-like dict, eos ids) from the GGUF metadata."""
    reader = _reader(path)
    arch = _field(reader, "general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise ValueError(f"{path}: GGUF architecture {arch!r} is not supported; "
                         f"supported: {', '.join(GGUF_ARCHITECTURES)}")

    def key(name: str, default: Any = None) -> Any:
        return _field(reader, f"{arch}.{name}", default)

    tensors = {t.name: t for t in reader.tensors}
    num_heads = key("attention.head_count")
    if num_heads is None or key("embedding_length") is None:
        raise ValueError(f"{path}: GGUF metadata lacks {arch}.attention.head_count / {arch}.embedding_length")
    hidden = key("embedding_length")
    head_dim = key("attention.key_length") or hidden // num_heads
    theta = float(key("rope.freq_base", 10000.0))
    vocab = key("vocab_size") or len(reader.get_field("tokenizer.ggml.tokens").data)
    name = str(_field(reader, "general.name", "")).lower()
    hf: dict[str, Any] = {
        "architectures": ["MistralForCausalLM" if arch == "llama" and "mistral" in name else GGUF_ARCHITECTURES[arch]],
        "model_type": arch,
        "vocab_size": int(vocab),
        "hidden_size": hidden,
        "intermediate_size": key("feed_forward_length"),
        "num_hidden_layers": key("block_count"),
        "num_attention_heads": num_heads,
        "num_key_value_heads": key("attention.head_count_kv", num_heads),
        "head_dim": head_dim,
        "max_position_embeddings": key("context_length", 4096),
        "rms_norm_eps": key("attention.layer_norm_rms_epsilon", 1e-6),
        "rope_theta": theta,
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
    }
    scaling_type = key("rope.scaling.type")
    if scaling_type == "linear":
        hf["rope_scaling"] = {"rope_type": "linear", "factor": float(key("rope.scaling.factor"))}
    elif scaling_type not in (None, "none"):
        hf["rope_scaling"] = {"rope_type": scaling_type, "factor": float(key("rope.scaling.factor", 1.0)),
                              "original_max_position_embeddings": key("rope.scaling.original_context_length")}
    elif "rope_freqs.weight" in tensors:
        from gguf.quants import dequantize

        t = tensors["rope_freqs.weight"]
        hf["rope_scaling"] = _infer_llama3_scaling(dequantize(t.data, t.tensor_type), head_dim, theta)
    weight_types = {t.tensor_type.name for t in reader.tensors if len(t.shape) == 2}
    if len(weight_types) == 1 and next(iter(weight_types)) in ("F32", "F16", "BF16"):
        hf["torch_dtype"] = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[weight_types.pop()]
    eos = [hf["eos_token_id"], _field(reader, "tokenizer.ggml.eot_token_id")]
    eos_ids = tuple(dict.fromkeys(int(e) for e in eos if e is not None)) or None
    return hf, eos_ids


def iterate_gguf(path: str, hf_config: dict[str, Any], progress: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (HF tensor name, float32 CPU tensor) for every tensor in the GGUF file."""
    from gguf.quants import dequantize

    reader = _reader(path)
    permute = hf_config.get("model_type") in PERMUTED_QK_ARCHS
    heads = {"attn_q": hf_config["num_attention_heads"], "attn_k": hf_config["num_key_value_heads"]}
    for t in tqdm(reader.tensors, desc="Loading GGUF", unit="tensor", disable=not progress):
        if t.name in _SKIPPED:
            continue
        hf_name = gguf_to_hf_name(t.name)
        if hf_name is None:
            raise ValueError(f"{path}: GGUF tensor {t.name!r} has no Hugging Face counterpart")
        try:
            w = dequantize(t.data, t.tensor_type)  # [rows, cols] (GGUF lists dims reversed)
        except NotImplementedError as e:
            raise ValueError(f"{path}: tensor {t.name!r}: {e}") from None
        kind = t.name.split(".")[2] if t.name.startswith("blk.") else ""
        if permute and kind in heads:
            w = unpermute_qk(w, heads[kind])
        # copies only when dequantize returned a read-only view of the memory map (F32)
        yield hf_name, torch.from_numpy(np.require(w, np.float32, ["C", "W"]))
    _cached_reader.cache_clear()  # the tensors are read: let the file's mapping go
