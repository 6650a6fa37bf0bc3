"""Shared fixtures: tiny random checkpoints written by transformers, and their HF models; and
the suite-wide tritium cache folder (GGUF config, tokenizer, weights): one per test session,
never the user's ~/.cache, shared by the tests that load the default model."""
from __future__ import annotations

import os

import pytest

from tests.utils.tiny_models import make_tiny_checkpoint


@pytest.fixture(scope="session", autouse=True)
def session_cache_dir(tmp_path_factory):
    old = os.environ.get("TRITIUM_CACHE_DIR")
    os.environ["TRITIUM_CACHE_DIR"] = str(tmp_path_factory.mktemp("tritium-cache"))
    yield os.environ["TRITIUM_CACHE_DIR"]
    if old is None:
        os.environ.pop("TRITIUM_CACHE_DIR", None)
    else:
        os.environ["TRITIUM_CACHE_DIR"] = old


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
