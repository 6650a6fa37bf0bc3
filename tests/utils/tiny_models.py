"""Tiny random checkpoints written by Hugging Face transformers' own classes, for golden tests.

    from tests.utils.tiny_models import FAMILIES, make_tiny_checkpoint
    path = make_tiny_checkpoint("qwen3", tmp_path / "qwen3")          # -> str folder
    path = make_tiny_checkpoint("llama", d, num_hidden_layers=3)      # config overrides
    path = make_tiny_checkpoint("llama3", d, rope_form="classic")     # rope_theta + rope_scaling keys
    path = make_tiny_checkpoint("mistral", d, max_shard_size="40KB")  # sharded + index.json

The folder holds config.json, generation_config.json and float32 safetensors (no tokenizer:
token ids only, vocab 256). Weights are deterministic for a given seed; norm weights and
biases are randomised too (HF initialises them to 1 / 0, which would hide loading bugs), and the
init std is 0.1 so attention is far from uniform and RoPE mistakes show in the logits.

Families: llama (plain), llama3 / llama-linear / llama-dynamic (RoPE scaling types), mistral,
qwen2 (q/k/v bias), qwen3 (q/k norm, head_dim 32 != hidden / heads), smollm (tied embeddings,
3 heads over 1 KV head). For llama-dynamic, max_position_embeddings is 16 so prompts longer
than that exercise the NTK scaling.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import torch

FAMILIES = ("llama", "llama3", "llama-linear", "llama-dynamic", "mistral", "qwen2", "qwen3", "smollm")

_BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, initializer_range=0.1,
             bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)

# family -> (transformers class names, config overrides, rope parameters)
_FAMILIES: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}, {"rope_type": "default", "rope_theta": 10000.0}),
    "llama3": ("LlamaConfig", "LlamaForCausalLM", {},
               {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "llama-linear": ("LlamaConfig", "LlamaForCausalLM", {},
                     {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}),
    "llama-dynamic": ("LlamaConfig", "LlamaForCausalLM", {"max_position_embeddings": 16},
                      {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None, "head_dim": 16},
                {"rope_type": "default", "rope_theta": 100000.0}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}, {"rope_type": "default", "rope_theta": 1000000.0}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 32},
              {"rope_type": "default", "rope_theta": 1000000.0}),
    "smollm": ("LlamaConfig", "LlamaForCausalLM",
               {"hidden_size": 48, "num_attention_heads": 3, "num_key_value_heads": 1, "tie_word_embeddings": True},
               {"rope_type": "default", "rope_theta": 100000.0}),
}


def _rewrite_rope(config_path: str, rope_form: str) -> None:
    """Rewrite config.json's RoPE keys into the 'new' (rope_parameters) or 'classic'
    (rope_theta + rope_scaling) form, whichever the installed transformers wrote."""
    with open(config_path) as f:
        cfg = json.load(f)
    params = dict(cfg.pop("rope_parameters", None) or {})
    theta = params.pop("rope_theta", cfg.pop("rope_theta", 10000.0))
    scaling = dict(cfg.pop("rope_scaling", None) or {}) or params
    scaling.setdefault("rope_type", "default")
    if rope_form == "new":
        cfg["rope_parameters"] = {"rope_theta": theta, **scaling}
    elif rope_form == "classic":
        cfg["rope_theta"] = theta
        cfg["rope_scaling"] = None if scaling["rope_type"] == "default" else scaling
    else:
        raise ValueError(f"rope_form must be 'new' or 'classic', got {rope_form!r}")
    with open(config_path, "w") as f:
        json.dump(cfg, f, indent=2)


def make_tiny_checkpoint(family: str, dirpath: str | os.PathLike, *, seed: int = 0, rope_form: str = "new",
                         max_shard_size: Optional[str] = None,
                         generation_eos_ids: Optional[list[int]] = None, **overrides: Any) -> str:
    """Write a tiny random `family` checkpoint to `dirpath` and return the folder (str).

    overrides: HF config fields (num_hidden_layers=3, vocab_size=512, ...).
    rope_form: 'new' (rope_parameters) or 'classic' (rope_theta + rope_scaling) config.json.
    max_shard_size: e.g. "40KB" to write sharded safetensors with model.safetensors.index.json.
    generation_eos_ids: written as generation_config.json's eos_token_id (default: [2]).
    """
    import transformers

    if family not in _FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    config_cls, model_cls, family_overrides, rope = _FAMILIES[family]
    kwargs = {**_BASE, **family_overrides, **overrides}
    config = getattr(transformers, config_cls)(rope_parameters=dict(rope), **kwargs)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = getattr(transformers, model_cls)(config).to(torch.float32).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.uniform_(0.5, 1.5)
                elif name.endswith(".bias"):
                    p.normal_(0.0, 0.2)
    os.makedirs(dirpath, exist_ok=True)
    save_kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(dirpath, safe_serialization=True, **save_kwargs)
    _rewrite_rope(os.path.join(dirpath, "config.json"), rope_form)
    gen = {"bos_token_id": 1, "eos_token_id": generation_eos_ids if generation_eos_ids is not None else 2}
    with open(os.path.join(dirpath, "generation_config.json"), "w") as f:
        json.dump(gen, f)
    return str(dirpath)
