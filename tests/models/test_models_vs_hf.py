"""Golden test: tritium's Llama-family model equals transformers on the same tiny random weights."""
from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from tests.utils.model_harness import SingleRequestHarness, forward_logits, greedy_decode
from tests.utils.tiny_models import FAMILIES, make_tiny_checkpoint
from tritium.loader import load_model, model_config_from_source, resolve_model_source

PROMPT_LEN = 24  # > 16: crosses a KV block, and exceeds llama-dynamic's max_position_embeddings
REL_TOL = 1e-4  # of the logits' scale; float32 runs agree to ~1e-6


SCALED_FAMILIES = ("llama3", "llama-linear", "llama-dynamic")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """family -> (checkpoint path, tritium model, tritium ModelConfig, prompt ids), built once."""
    cache = {}

    def get(name: str):
        if name not in cache:
            path = make_tiny_checkpoint(name, tmp_path_factory.mktemp(name))
            source = resolve_model_source(path)
            config = model_config_from_source(source, dtype="float32")
            model = load_model(source, config, "cpu")
            prompt = torch.randint(3, config.vocab_size, (PROMPT_LEN,), generator=torch.Generator().manual_seed(1))
            cache[name] = path, model, config, prompt
        return cache[name]

    return get


def hf_model(path: str):
    """A fresh transformers model per test: HF's dynamic RoPE keeps state between calls."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def assert_close(ours: torch.Tensor, ref: torch.Tensor, rel: float = REL_TOL) -> None:
    err, scale = (ours - ref).abs().max().item(), ref.abs().max().item()
    assert err <= rel * scale, f"max |diff| {err:.3g} exceeds {rel} x scale {scale:.3g}"


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_match_hf(build, name):
    path, model, config, prompt = build(name)
    hf = hf_model(path)
    with torch.no_grad():
        ref = hf(prompt[None]).logits[0].float()  # [T, vocab]
    ours = forward_logits(model, config, prompt)
    assert ours.dtype == torch.float32 and ours.shape == ref.shape
    assert_close(ours, ref)
    assert torch.equal(ours.argmax(-1), ref.argmax(-1)), "greedy next tokens differ"


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_decode_matches_hf_cached_decode(build, name):
    """Prefill + one-token decode steps through the paged cache == HF's own cached decode loop."""
    path, model, config, prompt = build(name)
    hf = hf_model(path)
    # transformers >= 5.2x names the cache argument `cache`; earlier 5.x `past_key_values`
    cache_arg = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
    expected, ids, past = [], prompt[None], None
    with torch.no_grad():
        for _ in range(6):
            out = hf(ids, use_cache=True, **({cache_arg: past} if past is not None else {}))
            past = getattr(out, "cache", None) or out.past_key_values
            ids = out.logits[:, -1:].argmax(-1)
            expected.append(int(ids))
    assert greedy_decode(model, config, prompt.tolist(), 6) == expected


@pytest.mark.parametrize("name", FAMILIES)
def test_two_step_prefill_equals_one_pass(build, name):
    """Prefilling a prefix, then the rest against the cached prefix, gives one pass's logits."""
    path, model, config, prompt = build(name)
    if name == "llama-dynamic":  # NTK base follows the call's longest position: stay within it
        prompt = prompt[: config.max_position_embeddings]
    full = forward_logits(model, config, prompt)
    harness = SingleRequestHarness(model, config, max_tokens=64)
    split = 10
    parts = [harness.step(prompt[:split]), harness.step(prompt[split:-2]),
             harness.step(prompt[-2:-1]), harness.step(prompt[-1:])]  # last two: decode path
    assert_close(torch.cat(parts), full, rel=1e-5)


@pytest.mark.parametrize("name", SCALED_FAMILIES)
def test_rope_scaling_is_exercised(build, name):
    """Negative control: dropping the RoPE scaling visibly changes the logits, so the match
    above really tests the scaled frequencies."""
    path, model, config, prompt = build(name)
    assert config.rope_scaling is not None and config.rope_scaling["rope_type"] in name + "llama3"
    if name == "llama-dynamic":
        assert config.max_position_embeddings < len(prompt)
    plain = dataclasses.replace(config, rope_scaling=None, max_position_embeddings=256)
    from tritium.models.llama import LlamaForCausalLM

    other = LlamaForCausalLM(plain).eval()
    other.load_state_dict(model.state_dict())
    diff = (forward_logits(other, plain, prompt) - forward_logits(model, config, prompt)).abs().max()
    assert diff > 1e-2
