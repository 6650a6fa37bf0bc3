"""The packaged model shapes build in tritium with the same parameter count as transformers'
own classes on the same config.json (both on the meta device: no memory, no weights)."""
from __future__ import annotations

import json
import os

import pytest
import torch

from tritium.bench.model_shapes import available_shapes, resolve_model_arg
from tritium.config import ModelConfig
from tritium.models.registry import get_model_class

# Published sizes: Llama-3.1-8B 8.03 B, Llama-3.3-70B 70.6 B, SmolLM2-135M 135 M parameters.
PUBLISHED = {"llama-3.1-8b": 8.03e9, "llama-3.3-70b": 70.6e9, "smollm2-135m": 134.5e6}


def test_the_headline_shapes_are_packaged():
    assert {"llama-3.1-8b", "smollm2-135m", "qwen2.5-7b", "mistral-7b-v0.3"} <= set(available_shapes())


@pytest.mark.parametrize("name", available_shapes())
def test_shape_matches_transformers(name):
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = resolve_model_arg(name, "dummy")
    with open(os.path.join(folder, "config.json")) as f:
        hf = json.load(f)
    with torch.device("meta"):
        ours = get_model_class(hf["architectures"][0])(ModelConfig.from_hf(hf))
        theirs = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters())
    if name in PUBLISHED:
        assert count == pytest.approx(PUBLISHED[name], rel=0.005)
