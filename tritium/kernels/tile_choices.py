"""The weight-streaming GEMM's timed tile choices, kept in a saved engine (as TensorRT-LLM keeps
its chosen tactics): a load on the same GPU model with the same Triton and the same kernel version
(streaming_gemm.KERNEL_VERSION) takes them instead of compiling and timing every candidate again
(kernels/streaming_gemm.py times them on first use).

    {"gpu": "NVIDIA H200", "triton": "3.6.0", "kernels": 4,
     "choices": [{"weight": 0, "act": 1, "n": 6144, "k": 4096, "group": 0, "dtype": "bfloat16",
                  "one_row": true, "block_n": 64, "block_k": 128, "split_k": 4, ...}, ...]}
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional

import torch
import triton

from tritium.config import _DTYPES
from tritium.kernels import streaming_gemm

logger = logging.getLogger(__name__)

_KEY_FIELDS = ("weight", "act", "n", "k", "group", "dtype", "one_row")
_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(streaming_gemm.GemvConfig))


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def choices_on(device_index: int) -> list[dict[str, Any]]:
    """The choices made so far on cuda:device_index, as JSON-able records."""
    out = []
    for key, cfg in streaming_gemm._CHOSEN.items():
        if key.device.type == "cuda" and (key.device.index or 0) == device_index:
            out.append({"weight": key.weight, "act": key.act, "n": key.n, "k": key.k, "group": key.group,
                        "dtype": str(key.dtype).replace("torch.", ""), "one_row": key.one_row,
                        **dataclasses.asdict(cfg)})
    return out


def adopt(records: list[dict[str, Any]], device_index: int) -> int:
    """Take saved records as this process's choices on cuda:device_index (a choice already made
    here stays); returns how many were taken. A malformed record is a ValueError naming it."""
    taken = 0
    for rec in records:
        try:
            if rec["dtype"] not in _DTYPES:
                raise ValueError(f"{rec['dtype']!r} is not a dtype tritium runs in")
            dtype = _DTYPES[rec["dtype"]]
            key = streaming_gemm.ChoiceKey(int(rec["weight"]), int(rec["act"]), int(rec["n"]), int(rec["k"]),
                                           int(rec["group"]), dtype, torch.device("cuda", device_index),
                                           bool(rec["one_row"]))
            # a field a record lacks (saved before it existed) takes its default
            cfg = streaming_gemm.GemvConfig(**{f: rec[f] for f in _CONFIG_FIELDS if f in rec})
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"tile choice {rec!r} is malformed ({e})") from None
        if key not in streaming_gemm._CHOSEN:
            streaming_gemm._CHOSEN[key] = cfg
            taken += 1
    return taken


def export_choices(device: torch.device) -> Optional[dict[str, Any]]:
    """What a saved engine keeps: None off CUDA (nothing is timed there)."""
    if device.type != "cuda":
        return None
    index = _cuda_index(device)
    return {**_made_here(index), "choices": choices_on(index)}


def _made_here(index: int) -> dict[str, Any]:
    return {"gpu": torch.cuda.get_device_name(index), "triton": triton.__version__,
            "kernels": streaming_gemm.KERNEL_VERSION}


def import_choices(saved: Optional[dict[str, Any]], device: torch.device) -> int:
    """Adopt a saved engine's choices when they were made on this GPU model with this Triton
    version and kernel version (elsewhere they are ignored and timed afresh); returns how many
    were taken."""
    if not saved or device.type != "cuda":
        return 0
    index = _cuda_index(device)
    here = _made_here(index)
    made = {name: saved.get(name) for name in here}
    if made != here:
        logger.info("saved GEMM tile choices were made on %s; this is %s: timing them again", made, here)
        return 0
    try:
        return adopt(saved.get("choices", []), index)
    except ValueError as e:  # an optimization only: time the tiles again rather than refuse the engine
        logger.warning("ignoring the saved GEMM tile choices: %s", e)
        return 0
