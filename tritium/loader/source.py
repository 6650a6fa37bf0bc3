"""Decide what a user's `model` argument points at, before anything is built.

    folder with config.json (+ *.safetensors)   -> format 'hf'
    a *.gguf file                               -> format 'gguf' (config and tokenizer from its metadata)
    load_format='dummy': folder with config.json, a config.json path, or a *.gguf file
                                                -> random weights, same shapes
    a saved engine (folder with tritium_engine.json) -> format 'engine' (loader/saved_engine.py)
    a pre-quantized HF folder (FP8, AWQ, GPTQ)   -> format 'hf' with checkpoint_quant
                                                   (quantization/hf_checkpoints.py)
Every failure is raised here, naming the file, so no model is built from a broken checkpoint.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional

LOAD_FORMATS = ("auto", "hf", "safetensors", "gguf", "dummy", "engine")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass(frozen=True)
class ModelSource:
    format: str  # 'hf' | 'gguf' | 'dummy'
    path: str  # the folder (hf, dummy) or the .gguf file
    hf_config: dict[str, Any]  # config.json contents (for gguf: built from the file's metadata)
    tokenizer_path: Optional[str] = None  # folder or .gguf file; None when there is no tokenizer
    generation_eos_ids: Optional[tuple[int, ...]] = None  # generation_config.json's eos_token_id
    engine: Any = None  # format 'engine': its saved_engine.EngineInfo
    checkpoint_quant: Any = None  # format 'hf' pre-quantized: quantization.hf_checkpoints.CheckpointQuantization


def read_json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def _generation_eos_ids(folder: str) -> Optional[tuple[int, ...]]:
    path = os.path.join(folder, "generation_config.json")
    if not os.path.isfile(path):
        return None
    eos = read_json(path).get("eos_token_id")
    if eos is None:
        return None
    return tuple(int(e) for e in eos) if isinstance(eos, (list, tuple)) else (int(eos),)


def _tokenizer_dir(folder: str) -> Optional[str]:
    return folder if any(os.path.isfile(os.path.join(folder, f)) for f in TOKENIZER_FILES) else None


def _find_gguf(folder: str) -> str:
    files = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
    if len(files) != 1:
        raise ValueError(f"load_format='gguf' needs a .gguf file; {folder} holds {len(files)}: {files}")
    return os.path.join(folder, files[0])


def _gguf_source(path: str, fmt: str) -> ModelSource:
    from tritium.loader.cache import CacheSlot, cached

    def build() -> tuple[dict[str, Any], Optional[tuple[int, ...]]]:
        from tritium.loader.gguf_loader import gguf_hf_config

        return gguf_hf_config(path)

    def write(folder: str, value) -> None:
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
            json.dump({"hf_config": value[0], "eos_ids": value[1]}, f)

    def read(folder: str):
        data = read_json(os.path.join(folder, "config.json"))
        return data["hf_config"], (tuple(data["eos_ids"]) if data["eos_ids"] is not None else None)

    # Parsing the GGUF metadata (gguf-py reads every tokenizer string) takes seconds: cached.
    hf_config, eos_ids = cached(CacheSlot("gguf-config", path, {}), read, build, write)
    return ModelSource(fmt, path, hf_config, tokenizer_path=path, generation_eos_ids=eos_ids)


def resolve_model_source(model: str, load_format: str = "auto", verify: bool = True) -> ModelSource:
    """verify=False: a saved engine's files are not read through for their CRC32s (a caller that
    only wants its tokenizer while another process loads it)."""
    if load_format not in LOAD_FORMATS:
        raise ValueError(f"load_format={load_format!r} is not supported; use one of {', '.join(LOAD_FORMATS)}")
    path = os.path.abspath(os.path.expanduser(str(model)))
    if not os.path.exists(path):
        raise FileNotFoundError(f"model path {model!r} does not exist (tritium loads a local checkpoint folder "
                                f"or .gguf file; there is no hub download here)")
    if os.path.isfile(path) and path.endswith(".gguf"):
        if load_format not in ("auto", "gguf", "dummy"):
            raise ValueError(f"{path} is a GGUF file but load_format={load_format!r}")
        return _gguf_source(path, "dummy" if load_format == "dummy" else "gguf")
    if load_format == "gguf":
        if not os.path.isdir(path):
            raise ValueError(f"load_format='gguf' needs a .gguf file, got {path}")
        return _gguf_source(_find_gguf(path), "gguf")

    from tritium.loader.saved_engine import is_engine_dir, read_engine

    if is_engine_dir(path):
        if load_format not in ("auto", "engine"):
            raise ValueError(f"{path} is a saved engine; load_format={load_format!r} does not apply to it")
        info = read_engine(path, verify=verify)
        eos = info.config.get("generation_eos_ids")
        return ModelSource("engine", path, info.hf_config, _tokenizer_dir(path),
                           tuple(eos) if eos is not None else None, engine=info)
    if os.path.isfile(path):
        if load_format != "dummy" or os.path.basename(path) != "config.json":
            raise ValueError(f"{path} is a file; pass a checkpoint folder, a .gguf file, or (with "
                             f"load_format='dummy') a config.json")
        folder = os.path.dirname(path)
    else:
        folder = path
    hf_config = read_json(os.path.join(folder, "config.json"))
    eos_ids = _generation_eos_ids(folder)
    if load_format == "dummy":
        return ModelSource("dummy", folder, hf_config, _tokenizer_dir(folder), eos_ids)

    from tritium.loader.hf_loader import list_safetensors_files

    from tritium.quantization.hf_checkpoints import detect

    list_safetensors_files(folder)  # fails now, naming the file, if the weights are incomplete
    return ModelSource("hf", folder, hf_config, _tokenizer_dir(folder), eos_ids,
                       checkpoint_quant=detect(folder, hf_config))
