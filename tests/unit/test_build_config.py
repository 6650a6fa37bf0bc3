"""BuildConfig / ResolvedSchedulerConfig validation and derivation."""
from __future__ import annotations

import pytest

from tritium.config import BuildConfig, ModelConfig, ResolvedSchedulerConfig

CFG = ModelConfig(architecture="LlamaForCausalLM", vocab_size=100, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  max_position_embeddings=2048)


@pytest.mark.parametrize("kwargs,field", [
    (dict(max_batch_size=0), "max_batch_size"),
    (dict(max_num_tokens=-1), "max_num_tokens"),
    (dict(max_num_tokens=1.5), "max_num_tokens"),
    (dict(max_seq_len=0), "max_seq_len"),
])
def test_bad_build_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        BuildConfig(**kwargs)


def test_max_seq_len_defaults_to_the_models_context():
    assert ResolvedSchedulerConfig.from_build(BuildConfig(), CFG).max_model_len == 2048
    assert ResolvedSchedulerConfig.from_build(BuildConfig(max_seq_len=300), CFG).max_model_len == 300


def test_without_chunked_prefill_a_whole_prompt_must_fit_one_step():
    with pytest.raises(ValueError, match="chunked prefill"):
        ResolvedSchedulerConfig.from_build(BuildConfig(max_num_tokens=512, enable_chunked_prefill=False), CFG)
    ok = ResolvedSchedulerConfig.from_build(BuildConfig(max_num_tokens=512, max_seq_len=512,
                                                        enable_chunked_prefill=False), CFG)
    assert not ok.enable_chunked_prefill


def test_unsupported_architecture_lists_the_supported_ones():
    with pytest.raises(ValueError, match="GPT2LMHeadModel.*LlamaForCausalLM"):
        ModelConfig.from_hf({"architectures": ["GPT2LMHeadModel"], "vocab_size": 10, "hidden_size": 8,
                             "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1})
