"""Stream the tensors of a Hugging Face safetensors checkpoint (single file or sharded).

Tensors are read one at a time onto the CPU (memory-mapped); each parameter's weight_loader
copies only its TP shard to the device, so a weight is never whole on the device.
"""
from __future__ import annotations

import os
from typing import Iterator

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from tritium.loader.source import read_json

INDEX_FILE = "model.safetensors.index.json"


def list_safetensors_files(folder: str) -> list[str]:
    """The checkpoint's weight files, checked to exist: the index's shards, model.safetensors,
    or else every *.safetensors in the folder."""
    index_path = os.path.join(folder, INDEX_FILE)
    if os.path.isfile(index_path):
        weight_map = read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index_path} has no 'weight_map'")
        files = [os.path.join(folder, f) for f in sorted(set(weight_map.values()))]
        for f in files:
            if not os.path.isfile(f):
                raise FileNotFoundError(f"{index_path} lists shard {os.path.basename(f)}, but {f} does not exist")
        return files
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".safetensors"))
    if not files:
        other = [f for f in os.listdir(folder) if f.endswith((".bin", ".pt", ".pth"))]
        hint = f" (found {other}: only safetensors weights are supported)" if other else ""
        raise FileNotFoundError(f"no *.safetensors weights in {folder}{hint}")
    return files


def _open(path: str):
    try:
        return safe_open(path, framework="pt", device="cpu")
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt headers
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from None


def iterate_safetensors(folder: str, progress: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (HF tensor name, CPU tensor) for every tensor of the checkpoint in `folder`."""
    files = list_safetensors_files(folder)
    with tqdm(total=len(files), desc="Loading safetensors", unit="file", disable=not progress) as bar:
        for path in files:
            with _open(path) as f:
                for name in f.keys():
                    try:
                        tensor = f.get_tensor(name)
                    except Exception as e:
                        raise ValueError(f"{path}: tensor {name!r} cannot be read (truncated file?): {e}") from None
                    yield name, tensor
            bar.update(1)
