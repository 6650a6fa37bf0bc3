"""Shared fixtures: tiny random checkpoints written by transformers, and their HF models."""
from __future__ import annotations

import pytest

from tests.utils.tiny_models import make_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    return str(make_tiny_checkpoint("llama", tmp_path_factory.mktemp("tiny_llama")))


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> str:
    return str(make_tiny_checkpoint("qwen3", tmp_path_factory.mktemp("tiny_qwen3")))


@pytest.fixture(scope="session")
def hf_tiny_llama(tiny_llama):
    """The same checkpoint through Hugging Face transformers: the reference."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama, torch_dtype=torch.float32).eval()
