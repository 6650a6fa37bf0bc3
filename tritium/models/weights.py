"""Route checkpoint tensors (HF names) onto a model's parameters through their weight_loaders.

Shared by every model definition: fused parameters are reached through `stacked_params`
({hf name fragment: (fused fragment, shard id)}); anything that matches no parameter, has the
wrong shape, or never arrives is an error naming the tensor.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn


def _expected_shards(module: nn.Module) -> tuple[Any, ...]:
    if hasattr(module, "output_sizes"):  # MergedColumnParallelLinear
        return tuple(range(len(module.output_sizes)))
    if hasattr(module, "total_num_kv_heads"):  # QKVParallelLinear
        return ("q", "k", "v")
    return (None,)


def load_named_weights(model: nn.Module, weights: Iterable[tuple[str, torch.Tensor]],
                       stacked_params: dict[str, tuple[str, Any]], ignore: tuple[str, ...] = ()) -> set[str]:
    params = dict(model.named_parameters())  # tied parameters appear once, under their first name
    modules = dict(model.named_modules())
    loaded: dict[str, set] = {}
    for name, tensor in weights:
        if name.endswith(ignore):
            continue
        pname, shard = name, None
        for fragment, (fused, shard_id) in stacked_params.items():
            if fragment in name:
                pname, shard = name.replace(fragment, fused), shard_id
                break
        param = params.get(pname)
        if param is None:
            raise ValueError(f"checkpoint tensor {name!r} (shape {tuple(tensor.shape)}) matches no parameter of "
                             f"{type(model).__name__}; is the config's architecture right?")
        try:
            param.weight_loader(param, tensor, shard)
        except ValueError as e:
            raise ValueError(f"checkpoint tensor {name!r}: {e}") from None
        owner = modules[pname.rpartition(".")[0]]
        loaded.setdefault(pname, set()).update(_expected_shards(owner) if shard is None else (shard,))

    inverse = {(fused, shard_id): fragment for fragment, (fused, shard_id) in stacked_params.items()}
    missing = []
    for pname in params:
        for shard in _expected_shards(modules[pname.rpartition(".")[0]]):
            if shard not in loaded.get(pname, ()):
                fused = next((f for (f, s) in inverse if s == shard and f in pname), None)
                missing.append(pname.replace(fused, inverse[(fused, shard)]) if fused else pname)
    if missing:
        shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
        raise ValueError(f"checkpoint lacks tensor(s) the model needs: {shown}")
    return set(loaded)
