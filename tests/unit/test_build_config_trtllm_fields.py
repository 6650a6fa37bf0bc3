"""TensorRT-LLM BuildConfig fields tritium has no use for: accepted with no effect when they only
steer TensorRT's engine builder, refused with the reason when they would turn on a feature
tritium does not implement."""
from __future__ import annotations

import pytest

from tritium.config import TRTLLM_NO_EFFECT_FIELDS, BuildConfig


def test_tensorrt_builder_fields_are_accepted_and_kept():
    build = BuildConfig(max_batch_size=8, opt_num_tokens=64, strongly_typed=True, plugin_config=object(),
                        gather_context_logits=True, kv_cache_type="paged", max_draft_len=0)
    build.use_refit = False
    assert build.max_batch_size == 8
    assert set(build.trtllm_fields) == {"opt_num_tokens", "strongly_typed", "plugin_config", "gather_context_logits",
                                       "use_refit"}
    assert build.trtllm_fields["opt_num_tokens"] == 64 and build.trtllm_fields["use_refit"] is False  # kept
    assert set(build.trtllm_fields) <= set(TRTLLM_NO_EFFECT_FIELDS)  # each one with its documented reason


@pytest.mark.parametrize("field,value,why", [
    ("max_draft_len", 4, "speculative decoding is not implemented"),
    ("lora_config", {"max_lora_rank": 8}, "LoRA adapters are not implemented"),
    ("kv_cache_type", "continuous", "always paged"),
    ("weight_streaming", True, "weight streaming is not implemented"),
    ("dry_run", True, "tritium build --dry-run"),
])
def test_unimplemented_features_are_refused_with_the_reason(field, value, why):
    with pytest.raises(ValueError, match=f"BuildConfig.{field}=.* is not supported: .*{why}"):
        BuildConfig(**{field: value})
    build = BuildConfig()
    with pytest.raises(ValueError, match=why):
        setattr(build, field, value)


def test_unknown_names_still_raise():
    with pytest.raises(TypeError, match="max_batchsize"):
        BuildConfig(max_batchsize=8)
    with pytest.raises(AttributeError, match="has no field 'max_batchsize'"):
        BuildConfig().max_batchsize = 8
