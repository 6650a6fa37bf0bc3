"""The Triton attention backend inside the model (RoPE fused into the cache write, decode and
prefill kernels) against Hugging Face transformers on tiny random checkpoints of every family:
logits of a prefill, a prefill split over a cached prefix, and greedy decoding through the cache."""
from __future__ import annotations

import inspect

import pytest
import torch

from tests.utils.model_harness import SingleRequestHarness, forward_logits, greedy_decode
from tests.utils.tiny_models import FAMILIES, make_tiny_checkpoint
from tritium.attention.triton_backend import TritonAttentionBackend
from tritium.loader import load_model, model_config_from_source, resolve_model_source

PROMPT_LEN = 24


@pytest.fixture(scope="module")
def build(tmp_path_factory, device):
    cache = {}

    def get(name: str):
        if name not in cache:
            path = make_tiny_checkpoint(name, tmp_path_factory.mktemp(name))
            source = resolve_model_source(path)
            config = model_config_from_source(source, dtype="float32")
            model = load_model(source, config, device)
            prompt = torch.randint(3, config.vocab_size, (PROMPT_LEN,), generator=torch.Generator().manual_seed(1))
            cache[name] = path, model, config, prompt
        return cache[name]

    return get


def hf_reference(path: str, prompt: torch.Tensor, steps: int) -> tuple[torch.Tensor, list[int]]:
    """transformers' logits of the prompt [T, vocab] and its greedy cached continuation."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    cache_arg = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
    tokens, ids, past, logits = [], prompt[None], None, None
    with torch.no_grad():
        for _ in range(steps):
            out = hf(ids, use_cache=True, **({cache_arg: past} if past is not None else {}))
            logits = out.logits[0].float() if logits is None else logits
            past = getattr(out, "cache", None) or out.past_key_values
            ids = out.logits[:, -1:].argmax(-1)
            tokens.append(int(ids))
    return logits, tokens


@pytest.mark.parametrize("name", FAMILIES)
def test_triton_backend_matches_hf(build, device, name):
    path, model, config, prompt = build(name)
    ref_logits, ref_tokens = hf_reference(path, prompt, steps=5)
    backend = TritonAttentionBackend(num_sms=4)
    ours = forward_logits(model, config, prompt.to(device), backend=backend).cpu()
    err, scale = (ours - ref_logits).abs().max().item(), ref_logits.abs().max().item()
    assert err <= 1e-4 * scale, f"max |diff| {err:.3g} vs scale {scale:.3g}"
    assert greedy_decode(model, config, prompt.tolist(), 5, backend=backend) == ref_tokens

    if name != "llama-dynamic":  # NTK base follows the call's longest position: one pass only
        harness = SingleRequestHarness(model, config, max_tokens=64, backend=backend)
        parts = torch.cat([harness.step(prompt[:10].to(device)), harness.step(prompt[10:].to(device))]).cpu()
        assert (parts - ref_logits).abs().max().item() <= 1e-4 * scale
