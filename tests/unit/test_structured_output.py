"""Guided decoding parts: the bitmask on the logits (numpy's unpackbits is the reference), the
params' validation, and the matcher state a request keeps across steps and preemption, on a
byte-level BPE tokenizer built here by `tokenizers` (256 byte tokens + EOS)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tritium import SamplingParams
from tritium.structured_output import GuidedDecodingParams
from tritium.structured_output.backend import GrammarBackend
from tritium.structured_output.bitmask import apply_token_bitmask_, bitmask_words
from tritium.structured_output.manager import StructuredOutputManager


@pytest.mark.parametrize("vocab", [32, 45, 1000])
def test_bitmask_masks_exactly_the_zero_bits(vocab):
    gen = torch.Generator().manual_seed(vocab)
    mask = torch.randint(-2 ** 31, 2 ** 31 - 1, (3, bitmask_words(vocab)), dtype=torch.int32, generator=gen)
    logits = torch.randn(3, vocab, generator=gen)
    expected_allowed = np.unpackbits(mask.numpy().view(np.uint8), axis=1, bitorder="little")[:, :vocab].astype(bool)
    out = apply_token_bitmask_(logits.clone(), mask)
    allowed = torch.from_numpy(expected_allowed)
    assert torch.equal(torch.isinf(out), ~allowed)
    assert torch.equal(out[allowed], logits[allowed])


def test_params_need_exactly_one_constraint():
    with pytest.raises(ValueError, match="exactly one"):
        GuidedDecodingParams()
    with pytest.raises(ValueError, match="exactly one"):
        GuidedDecodingParams(regex="a", json_object=True)
    with pytest.raises(ValueError, match="json"):
        GuidedDecodingParams(json=3)
    with pytest.raises(ValueError, match="guided_decoding"):
        SamplingParams(guided_decoding={"json": {}})
    assert GuidedDecodingParams(json={"type": "object"}).kind == "json"


@pytest.fixture(scope="module")
def byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # GPT-2's byte -> printable character table, so that token b is byte b.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    vocab = {chars[b]: b for b in range(256)}
    assert set(vocab) == set(pre_tokenizers.ByteLevel.alphabet())
    vocab["</s>"] = 256
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["</s>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>")


EOS = 256


def _allowed(manager, req_id, vocab=257) -> set[int]:
    mask = manager.bitmask([req_id], torch.device("cpu"))
    logits = apply_token_bitmask_(torch.zeros(1, vocab), mask)
    return set(torch.nonzero(torch.isfinite(logits[0])).flatten().tolist())


def test_matcher_follows_the_regex_and_replays_after_preemption(byte_tokenizer):
    manager = StructuredOutputManager(GrammarBackend(byte_tokenizer, 257, [EOS]))
    params = SamplingParams(guided_decoding=GuidedDecodingParams(regex=r"[0-9]{3}"))
    digits = {ord(c) for c in "0123456789"}
    manager.add_request("a", params, [])
    assert _allowed(manager, "a") == digits
    manager.accept(["a"], [ord("4")])
    manager.accept(["a"], [ord("2")])
    assert _allowed(manager, "a") == digits
    manager.accept(["a"], [ord("7")])
    assert _allowed(manager, "a") == {EOS}  # the pattern is complete: only EOS
    # Preempted and resumed: a fresh matcher replays the outputs so far.
    manager.remove("a")
    manager.add_request("a", params, [ord("4"), ord("2")])
    assert _allowed(manager, "a") == digits
    # Unguided rows in the same batch stay unconstrained.
    manager.add_request("free", SamplingParams(), [])
    mask = manager.bitmask(["free", "a"], torch.device("cpu"))
    assert (mask[0] == -1).all()


def test_backend_validates_before_anything_runs(byte_tokenizer):
    backend = GrammarBackend(byte_tokenizer, 257, [EOS])
    backend.validate(GuidedDecodingParams(json={"type": "object", "properties": {"a": {"type": "integer"}}}))
    backend.validate(GuidedDecodingParams(grammar='start: "yes" | "no"'))
    backend.validate(GuidedDecodingParams(grammar='root ::= "yes" | "no"'))  # GBNF
    with pytest.raises(ValueError, match="guided decoding"):
        backend.validate(GuidedDecodingParams(json={"type": "not-a-type"}))
    with pytest.raises(ValueError, match="guided decoding"):
        backend.validate(GuidedDecodingParams(json="{not json"))
    with pytest.raises(ValueError, match="guided decoding"):
        backend.validate(GuidedDecodingParams(regex="[unclosed"))
    with pytest.raises(ValueError, match="guided decoding"):
        backend.validate(GuidedDecodingParams(grammar="start: undefined_rule"))
