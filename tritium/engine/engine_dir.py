"""What a saved engine records about the engine it was saved from (tritium_engine.json's
contents besides the format version): the model's config, dtype, quantization, limits, memory
plan, and the command that rebuilds it from its source."""
from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from tritium.config import BuildConfig


def rebuild_command(source_path: str, quant: dict[str, Any] | None, dtype: str) -> str:
    parts = ["tritium", "build", source_path, "--output", "<folder>", "--dtype", dtype]
    if quant and quant.get("quant_algo"):
        parts += ["--quantization", quant["quant_algo"]]
    if quant and quant.get("kv_cache_quant_algo"):
        parts += ["--kv-cache-dtype", quant["kv_cache_quant_algo"].lower()]
    return shlex.join(parts).replace("'<folder>'", "<folder>")


def engine_description(parts, build_config: BuildConfig) -> dict[str, Any]:
    """parts: the factory's EngineParts of a built engine."""
    from tritium import __version__
    from tritium.kernels.tile_choices import export_choices
    dtype = str(parts.model_config.dtype).replace("torch.", "")
    quant = parts.quant_config.to_dict() if parts.quant_config is not None else None
    source = parts.source.engine.config.get("source") if parts.source.format == "engine" else parts.source.path
    rebuild = (parts.source.engine.config.get("rebuild_command") if parts.source.format == "engine"
               else rebuild_command(source, quant, dtype))
    return {
        "tritium_version": __version__,
        "architecture": parts.model_config.architecture,
        "hf_config": parts.source.hf_config,
        "dtype": dtype,
        "quant_config": quant,
        "build_config": dataclasses.asdict(build_config),
        "generation_eos_ids": list(parts.model_config.eos_token_ids),
        "memory_plan": parts.memory_plan,
        "source": source,
        "rebuild_command": rebuild,
        "kernel_tiles": export_choices(parts.device),  # the GEMM tiles timed on this GPU (tile_choices.py)
    }
