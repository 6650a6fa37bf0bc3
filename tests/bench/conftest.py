"""Fixtures for `tritium bench` tests: a tiny random checkpoint, a text corpus with its own small
tokenizer, and a runner for the real `tritium` command in a subprocess on this tree."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.utils.tiny_models import make_tiny_checkpoint

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_tritium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`tritium ARGS...` as a user runs it (python -m, this tree first on the path)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "tritium.entrypoints.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny Llama checkpoint (vocab 512) written by transformers: real weights for both backends."""
    return make_tiny_checkpoint("llama", tmp_path_factory.mktemp("bench_tiny_llama"), vocab_size=512, max_position_embeddings=512)


@pytest.fixture(scope="session")
def corpus_text() -> str:
    """Real English text: the documentation of a few standard-library modules."""
    import argparse
    import collections
    import inspect
    import json as json_module
    import logging

    return "\n\n".join(inspect.getdoc(m) for m in (argparse, collections, json_module, logging, inspect))


@pytest.fixture(scope="session")
def corpus_tokenizer(tmp_path_factory, corpus_text) -> str:
    """A byte-level BPE tokenizer trained on the corpus by Hugging Face tokenizers, saved as a folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([corpus_text], trainer)
    folder = tmp_path_factory.mktemp("corpus_tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(folder)
    return str(folder)
