"""`--extra-llm-api-options FILE` (trtllm-serve's and trtllm-bench's --extra_llm_api_options): a
YAML mapping of `LLM(...)` arguments applied on top of the command's flags.

    kv_cache_config:
      free_gpu_memory_fraction: 0.85
      enable_block_reuse: true
    cuda_graph_config:
      enable_padding: true
      max_batch_size: 256
    scheduler_config:
      capacity_scheduler_policy: GUARANTEED_NO_EVICT
    max_batch_size: 256

As in TensorRT-LLM, a key of the file replaces what the flags set for it (a `kv_cache_config:`
section is the whole KV cache config, its missing fields at their defaults). Every name is
checked before the model loads: an argument tritium does not have, or a field a config class does
not have, is an error naming the file and the key.
"""
from __future__ import annotations

import inspect
from typing import Any, Optional

_FROM_COMMAND_LINE = ("model",)  # what the command itself names


def read_extra_options(path: Optional[str]) -> dict[str, Any]:
    """The file's mapping ({} without a file); ValueError naming the file when it is not one."""
    if path is None:
        return {}
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ValueError(f"--extra-llm-api-options: cannot read {path}: {e}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"--extra-llm-api-options: {path} is not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ValueError(f"--extra-llm-api-options: {path} must be a mapping of LLM argument names to values, "
                         f"got {type(data).__name__}")
    for name in _FROM_COMMAND_LINE:
        if name in data:
            raise ValueError(f"--extra-llm-api-options: {path} sets {name!r}; give it on the command line")
    return data


def _quant_objects(extra: dict[str, Any]) -> dict[str, Any]:
    """quant_config / calib_config sections as their classes (LLM(...) takes the other configs as
    dicts itself: llm_args.resolve_llm_args)."""
    from tritium.llm.llm_args import user_config
    from tritium.quantization import CalibConfig, QuantConfig

    out = dict(extra)
    for name, cls in (("quant_config", QuantConfig), ("calib_config", CalibConfig)):
        if isinstance(out.get(name), dict):
            out[name] = user_config(cls, name, out[name])
    return out


def top_level_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The kwargs that LLM(...) passes on to llm_args.resolve_llm_args (not its named parameters)."""
    from tritium.llm.llm import LLM

    named = set(inspect.signature(LLM.__init__).parameters) - {"self", "kwargs"}
    return {k: v for k, v in kwargs.items() if k not in named}


def resolve_llm_kwargs(kwargs: dict[str, Any]):
    """What LLM(**kwargs) resolves its configs to, loading nothing: llm_args.resolve_llm_args'
    (build config, KV cache config, scheduler config, runtime options)."""
    from tritium.llm.llm_args import resolve_llm_args

    return resolve_llm_args(kwargs.get("build_config"), kwargs.get("kv_cache_config"),
                            bool(kwargs.get("enforce_eager", False)), top_level_args(kwargs))


def merge_extra_options(kwargs: dict[str, Any], extra: dict[str, Any], source: str = "") -> dict[str, Any]:
    """LLM kwargs from the flags, with the file's keys replacing theirs, checked as the LLM will
    check them (ValueError naming the key and `source`, the file)."""
    if not extra:
        return kwargs
    where = f"--extra-llm-api-options {source}: " if source else "--extra-llm-api-options: "
    try:
        merged = {**kwargs, **_quant_objects(extra)}
        resolve_llm_kwargs(merged)  # names and values checked before any loading
    except ValueError as e:
        raise ValueError(f"{where}{e}") from None
    return merged
