"""Saved engines: a folder holding a built model, loaded without re-quantizing or re-calibrating.

    <engine dir>/
        tritium_engine.json   format version, tritium version, the model's config.json, dtype,
                              quant config, build config, memory plan, what it was built from
                              and what the device needs (FP8 tensor cores for FP8 W8A8)
        model.safetensors     every parameter in the layout the engine runs (quantized weights
                              and their scales, fused q/k/v and gate/up, smoothed norms) and the
                              KV cache scales
        tokenizer files       tokenizer.json, tokenizer_config.json (chat template), ...
        manifest.json         size and CRC32s of every file above, written last

The folder is written beside its destination and renamed into place (loader/cache.py's
machinery), so a reader never sees a half-written engine; one without a manifest, with a file
missing, truncated or changed, or of another format version is refused with what is wrong and
the command that rebuilds it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from tritium.loader.cache import MANIFEST, check_files, read_manifest, write_folder_atomically

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
ENGINE_CONFIG = "tritium_engine.json"
WEIGHTS_FILE = "model.safetensors"
SAVED_BUFFERS = ("kv_scale",)  # buffers that are part of the engine (the rest are rebuilt at load)


class EngineFormatError(ValueError):
    """A saved engine folder that cannot be loaded: the message says why and how to rebuild."""


def is_engine_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, ENGINE_CONFIG))


@dataclass(frozen=True)
class EngineInfo:
    path: str
    config: dict[str, Any]  # tritium_engine.json
    manifest: dict[str, Any]  # the files' sizes and CRC32s, read with the config

    @property
    def hf_config(self) -> dict[str, Any]:
        return self.config["hf_config"]

    @property
    def quant_config(self) -> Optional[dict[str, Any]]:
        return self.config.get("quant_config")

    @property
    def dtype(self) -> str:
        return self.config["dtype"]

    @property
    def rebuild_hint(self) -> str:
        return self.config.get("rebuild_command") or "tritium build <source model> --output <folder>"


def _engine_error(path: str, problem: str, config: Optional[dict[str, Any]] = None) -> EngineFormatError:
    hint = (config or {}).get("rebuild_command") or "tritium build <source model> --output " + path
    return EngineFormatError(f"saved engine {path}: {problem}. Rebuild it: {hint}")


def read_engine(path: str, verify: bool = True) -> EngineInfo:
    """Check the folder and return its description; EngineFormatError naming the problem."""
    path = os.path.abspath(path)
    try:
        with open(os.path.join(path, ENGINE_CONFIG), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise _engine_error(path, f"{ENGINE_CONFIG} is unreadable ({e})") from None
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise _engine_error(path, f"it has format version {version!r}; this tritium reads version "
                                  f"{FORMAT_VERSION}", config)
    if not os.path.isfile(os.path.join(path, MANIFEST)):
        raise _engine_error(path, f"{MANIFEST} is missing: the folder is incomplete (its build was interrupted "
                                  "or files were copied partly)", config)
    try:
        manifest = read_manifest(path)
    except (OSError, ValueError) as e:
        raise _engine_error(path, f"{MANIFEST} is unreadable ({e})", config) from None
    if manifest.get("key") != {"format_version": FORMAT_VERSION}:
        raise _engine_error(path, f"{MANIFEST} belongs to another format", config)
    info = EngineInfo(path, config, manifest)
    if verify:
        verify_engine_files(info)
    return info


def verify_engine_files(info: EngineInfo) -> None:
    """Every file of the folder against its manifest (sizes, CRC32s read through); EngineFormatError
    naming the first that differs."""
    start = time.perf_counter()
    problem = check_files(info.path, info.manifest)
    if problem:
        raise _engine_error(info.path, problem, info.config)
    logger.info("saved engine files checked (sizes, CRC32) in %.1f s", time.perf_counter() - start)


def check_engine_device(info: EngineInfo, device: torch.device) -> None:
    """Refuse an engine whose quantization this device cannot run."""
    from tritium.quantization.config import QuantConfig, device_support_error

    if not info.quant_config:
        return
    cap = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    problem = device_support_error(QuantConfig.from_dict(info.quant_config), device.type, cap)
    if problem:
        raise _engine_error(info.path, problem, info.config)


def engine_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a saved engine stores: every parameter (tied ones once) and the saved buffers."""
    state = {name: p for name, p in model.named_parameters()}
    state.update({name: b for name, b in model.named_buffers() if name.rpartition(".")[2] in SAVED_BUFFERS})
    return {name: t.detach().cpu().contiguous() for name, t in state.items()}


def load_engine_state(model: nn.Module, path: str) -> None:
    """Point the model's parameters and saved buffers at the engine's tensors (checked first)."""
    from tritium.loader.model_loader import assign_saved_tensors

    targets: dict[str, torch.Tensor] = dict(model.named_parameters())
    targets.update({n: b for n, b in model.named_buffers() if n.rpartition(".")[2] in SAVED_BUFFERS})
    try:
        assign_saved_tensors(targets, os.path.join(path, WEIGHTS_FILE))
    except ValueError as e:
        raise EngineFormatError(f"saved engine {path}: its tensors do not match the model it describes ({e})") \
            from None


def save_engine(path: str, model: nn.Module, engine_config: dict[str, Any], tokenizer=None) -> None:
    """Write the engine folder at `path` atomically. An existing folder is replaced only if it
    is a saved engine (or empty): anything else there is never overwritten."""
    from safetensors.torch import save_file

    path = os.path.abspath(path)
    if os.path.exists(path) and not is_engine_dir(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise ValueError(f"{path} exists and is not a saved engine; choose a new or empty folder")
    config = {"format_version": FORMAT_VERSION, **engine_config}

    def write(folder: str) -> None:
        save_file(engine_state(model), os.path.join(folder, WEIGHTS_FILE), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        with open(os.path.join(folder, ENGINE_CONFIG), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=1, default=str)

    if os.path.isdir(path) and not os.listdir(path):
        shutil.rmtree(path)
    write_folder_atomically(path, write, {"format_version": FORMAT_VERSION})
