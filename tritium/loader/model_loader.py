"""Build a model from a ModelSource: class from the registry, parameters created directly in
the target dtype on the target device, weights streamed in through their weight_loaders, then
each module's process_weights_after_loading() (kernel-specific layouts)."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

import torch
from torch import nn

from tritium.config import ModelConfig, resolve_dtype
from tritium.loader.dummy_loader import init_dummy_weights
from tritium.loader.gguf_loader import iterate_gguf
from tritium.loader.hf_loader import iterate_safetensors
from tritium.loader.source import ModelSource
from tritium.models.registry import get_model_class


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def model_config_from_source(source: ModelSource, dtype: str | torch.dtype = "auto",
                             device: Optional[torch.device | str] = None) -> ModelConfig:
    """ModelConfig for `source`; dtype 'auto' follows resolve_dtype's rules for `device`."""
    device = torch.device(device or "cpu")
    config_dtype = source.hf_config.get("torch_dtype") or source.hf_config.get("dtype")
    return ModelConfig.from_hf(source.hf_config, dtype=resolve_dtype(dtype, config_dtype, device),
                               eos_token_ids=source.generation_eos_ids)


def load_model(source: ModelSource, model_config: ModelConfig, device: torch.device | str) -> nn.Module:
    """The model for `source`, its weights loaded (or random for 'dummy'), in eval mode."""
    device = torch.device(device)
    model_cls = get_model_class(model_config.architecture)
    with _default_dtype(model_config.dtype), device:
        model = model_cls(model_config)
    with torch.no_grad():
        if source.format == "dummy":
            init_dummy_weights(model)
        elif source.format in ("hf", "gguf"):
            weights = (iterate_safetensors(source.path) if source.format == "hf"
                       else iterate_gguf(source.path, source.hf_config))
            try:
                model.load_weights(weights)
            except ValueError as e:  # name the checkpoint too, unless the message already does
                if source.path in str(e):
                    raise
                raise ValueError(f"{source.path}: {e}") from None
        else:
            raise ValueError(f"unknown model source format {source.format!r}")
        for module in model.modules():  # e.g. repack linear weights for the CPU's matmul kernels
            if hasattr(module, "process_weights_after_loading"):
                module.process_weights_after_loading()
    return model.eval()


def load_tokenizer(source: ModelSource, tokenizer: Optional[str] = None):
    """The Hugging Face tokenizer: `tokenizer` (a folder, hub id or .gguf file) if given, else the
    source's own; None when the source has none (a dummy or bare checkpoint folder)."""
    from transformers import AutoTokenizer

    path = tokenizer if tokenizer is not None else source.tokenizer_path
    if path is None:
        return None
    if str(path).endswith(".gguf") and os.path.isfile(path):
        return AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path))
    return AutoTokenizer.from_pretrained(path)
