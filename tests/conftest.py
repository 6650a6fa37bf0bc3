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


@pytest.fixture(scope="session")
def smol_llm():
    """The embedded SmolLM2-135M GGUF in float32, shared by the modules that test the LLM API on it."""
    from tritium.default_model import default_model_path
    from tritium.llm.llm import LLM

    with LLM(default_model_path(), dtype="float32", max_batch_size=16, max_seq_len=512, max_beam_width=4) as llm:
        yield llm


@pytest.fixture(scope="session")
def hf_smol():
    """The same GGUF through Hugging Face transformers (dequantized to float32): the reference."""
    import os

    import torch
    from transformers import AutoModelForCausalLM

    from tritium.default_model import default_model_path

    path = default_model_path()
    return AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                dtype=torch.float32).eval()
