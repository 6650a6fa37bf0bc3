"""Build a model from a ModelSource: class from the registry, parameters created directly in
the target dtype on the target device, weights streamed in through their weight_loaders, then
each module's process_weights_after_loading() (kernel-specific layouts).

GGUF sources go through the cache (loader/cache.py): the parameters as loaded (dequantized,
fused, in the model's dtype) are saved as safetensors once and later memory-mapped straight into
the parameters (on CPU no copy: the pages are the file's); the tokenizer transformers converts
from the GGUF file is saved as a fast-tokenizer folder."""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import torch
from torch import nn

from tritium.config import ModelConfig, resolve_dtype
from tritium.distributed.parallel_state import get_tp_rank, get_tp_world_size
from tritium.loader.cache import CacheSlot, cached
from tritium.loader.dummy_loader import init_dummy_weights
from tritium.loader.gguf_loader import iterate_gguf
from tritium.loader.hf_loader import iterate_safetensors
from tritium.loader.source import ModelSource
from tritium.models.registry import get_model_class

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from tritium.quantization import ModelQuantization


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


def load_model(source: ModelSource, model_config: ModelConfig, device: torch.device | str,
               quant: Optional["ModelQuantization"] = None,
               calibration_samples: Optional[Callable[[], list[list[int]]]] = None) -> nn.Module:
    """The model for `source`, its weights loaded (or random for 'dummy'), in eval mode.

    quant: quantization (quantization.ModelQuantization) of its linear layers and KV cache;
    online quantization that needs statistics runs calibration_samples() through the float
    model before the weights are quantized."""
    device = torch.device(device)
    model_cls = get_model_class(model_config.architecture)
    start = time.perf_counter()
    with _default_dtype(model_config.dtype), device:
        model = model_cls(model_config, quant=quant) if quant is not None else model_cls(model_config)
    built = time.perf_counter()
    with torch.no_grad():
        if source.format == "dummy":
            init_dummy_weights(model)
        elif source.format == "hf":
            ckpt = source.checkpoint_quant  # a pre-quantized checkpoint: converted to tritium's layout
            weights = iterate_safetensors(source.path)
            _load_checkpoint(model, source, ckpt.convert(weights) if ckpt is not None else weights)
            if ckpt is not None:
                from tritium.quantization.hf_checkpoints import apply_kv_scales

                apply_kv_scales(model, ckpt)
        elif source.format == "engine":
            from tritium.loader.saved_engine import load_engine_state

            load_engine_state(model, source.path)
        elif source.format == "gguf":
            slot = CacheSlot("weights", source.path, {"dtype": str(model_config.dtype).replace("torch.", ""),
                                                      "tp": [get_tp_rank(), get_tp_world_size()]})
            cached(slot, lambda folder: _assign_saved_parameters(model, os.path.join(folder, WEIGHTS_FILE)),
                   lambda: _load_checkpoint(model, source, iterate_gguf(source.path, source.hf_config)),
                   lambda folder, _: _save_parameters(model, os.path.join(folder, WEIGHTS_FILE)))
        else:
            raise ValueError(f"unknown model source format {source.format!r}")
        if quant is not None and not quant.serialized and quant.config.needs_calibration:
            from tritium.quantization.calibration import calibrate

            if calibration_samples is None:
                raise ValueError(f"{quant.config.quant_algo or quant.config.kv_cache_quant_algo} needs calibration "
                                 "samples")
            calibrate(model, model_config, quant.config, calibration_samples())
        loaded = time.perf_counter()
        for module in model.modules():  # e.g. repack linear weights for the CPU's matmul kernels
            if hasattr(module, "process_weights_after_loading"):
                module.process_weights_after_loading()
    logger.info("model: modules built in %.1f s, weights %.1f s, prepared for the device in %.1f s",
                built - start, loaded - built, time.perf_counter() - loaded)
    return model.eval()


WEIGHTS_FILE = "model.safetensors"


def _load_checkpoint(model: nn.Module, source: ModelSource, weights) -> bool:
    try:
        model.load_weights(weights)
    except ValueError as e:  # name the checkpoint too, unless the message already does
        if source.path in str(e):
            raise
        raise ValueError(f"{source.path}: {e}") from None
    return True


def _save_parameters(model: nn.Module, path: str) -> None:
    from safetensors.torch import save_file

    save_file({name: p.detach().cpu().contiguous() for name, p in model.named_parameters()}, path)


def _assign_saved_parameters(model: nn.Module, path: str) -> bool:
    assign_saved_tensors(dict(model.named_parameters()), path)  # tied parameters once
    return True


def assign_saved_tensors(targets: dict[str, torch.Tensor], path: str) -> None:
    """Point every target tensor (parameters, buffers) at its tensor in the safetensors file
    `path` (CPU: the mmapped pages themselves; else a copy). Checks names, shapes and dtypes
    first (ValueError naming the difference), so a mismatch changes nothing."""
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as f:
        names = set(f.keys())
        if names != set(targets):
            raise ValueError(f"tensors differ: {sorted(names ^ set(targets))[:5]}")
        tensors = {name: f.get_tensor(name) for name in names}
    for name, t in tensors.items():
        p = targets[name]
        if t.shape != p.shape or t.dtype != p.dtype:
            raise ValueError(f"{name}: saved {tuple(t.shape)} {t.dtype}, model has {tuple(p.shape)} {p.dtype}")
    on_cpu = {name: t for name, t in tensors.items() if targets[name].device.type == "cpu"}
    for name, t in on_cpu.items():
        targets[name].data = t
    _copy_to_device([(targets[name].data, t) for name, t in tensors.items() if name not in on_cpu])


COPY_PIECE_BYTES = 64 << 20  # a large tensor goes over in row slices of about this size
COPY_THREADS = 8


def _copy_to_device(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """dst.copy_(src) for (device, mmapped host) pairs, in row slices on several threads: one
    thread's page faults and pageable copies reach ~2 GB/s, a few together several times that
    (torch releases the GIL while copying)."""
    from concurrent.futures import ThreadPoolExecutor

    pieces = []
    for dst, src in pairs:
        rows = dst.shape[0] if dst.dim() else 1
        row_bytes = max(1, dst.numel() * dst.element_size() // max(rows, 1))
        step = max(1, COPY_PIECE_BYTES // row_bytes)
        if dst.dim() == 0 or rows <= step:
            pieces.append((dst, src))
        else:
            pieces.extend((dst[i:i + step], src[i:i + step]) for i in range(0, rows, step))
    with ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="tritium-weights") as pool:
        list(pool.map(lambda pair: pair[0].copy_(pair[1]), pieces))
    if pieces and pieces[0][0].is_cuda:
        torch.cuda.synchronize(pieces[0][0].device)


def load_tokenizer(source: ModelSource, tokenizer: Optional[str] = None):
    """The Hugging Face tokenizer: `tokenizer` (a folder, hub id or .gguf file) if given, else the
    source's own; None when the source has none (a dummy or bare checkpoint folder)."""
    path = tokenizer if tokenizer is not None else source.tokenizer_path
    if path is None:  # before importing transformers (~1 s, and more beside a loading model)
        return None
    from transformers import AutoTokenizer

    if str(path).endswith(".gguf") and os.path.isfile(path):
        import transformers

        def convert():  # transformers rebuilds the tokenizer from the GGUF vocabulary: seconds
            return AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                                 gguf_file=os.path.basename(path))

        slot = CacheSlot("tokenizer", path, {"transformers": transformers.__version__})
        return cached(slot, AutoTokenizer.from_pretrained, convert, lambda folder, tok: tok.save_pretrained(folder))
    return AutoTokenizer.from_pretrained(path)
