"""Loader behaviour: every broken checkpoint fails with an error naming the file or tensor;
config forms, generation eos ids, dtypes and dummy weights work."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.utils.model_harness import forward_logits
from tests.utils.tiny_models import make_tiny_checkpoint
from tritium.config import cpu_prefers_bf16
from tritium.loader import load_model, load_tokenizer, model_config_from_source, resolve_model_source
from tritium.models.registry import get_model_class

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_tiny_checkpoint("llama", tmp_path_factory.mktemp("llama"))


@pytest.fixture
def llama_copy(llama_dir, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(llama_dir, dst)
    return str(dst)


def load(path: str, dtype: str = "float32", load_format: str = "auto"):
    source = resolve_model_source(path, load_format)
    config = model_config_from_source(source, dtype=dtype)
    return load_model(source, config, "cpu"), config


def edit_weights(folder: str, fn) -> None:
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def edit_config(folder: str, **changes) -> None:
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg.update(changes)
    with open(path, "w") as f:
        json.dump(cfg, f)


# ---- errors -------------------------------------------------------------------------------

def test_unknown_architecture(llama_copy):
    edit_config(llama_copy, architectures=["GPT2LMHeadModel"])
    source = resolve_model_source(llama_copy)
    with pytest.raises(ValueError, match="GPT2LMHeadModel.*supported: .*LlamaForCausalLM"):
        model_config_from_source(source)
    with pytest.raises(ValueError, match="'GPT2LMHeadModel' is not supported; supported: LlamaForCausalLM, "
                                         "MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM"):
        get_model_class("GPT2LMHeadModel")


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        resolve_model_source(str(tmp_path / "nowhere"))


def test_invalid_load_format(llama_dir):
    with pytest.raises(ValueError, match="load_format='pickle'"):
        resolve_model_source(llama_dir, "pickle")


def test_missing_config_json(llama_copy):
    os.remove(os.path.join(llama_copy, "config.json"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model_source(llama_copy)


def test_corrupt_config_json(llama_copy):
    with open(os.path.join(llama_copy, "config.json"), "w") as f:
        f.write('{"architectures": ["LlamaForCausalLM"], "hidden_size": ')
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        resolve_model_source(llama_copy)


def test_no_safetensors(llama_copy):
    os.remove(os.path.join(llama_copy, "model.safetensors"))
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors weights in .*ckpt"):
        resolve_model_source(llama_copy)


def test_missing_shard(tmp_path):
    path = make_tiny_checkpoint("qwen2", tmp_path / "sharded", max_shard_size="40KB")
    shards = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    assert len(shards) > 2 and os.path.isfile(os.path.join(path, "model.safetensors.index.json"))
    os.remove(os.path.join(path, shards[1]))
    with pytest.raises(FileNotFoundError, match=f"lists shard {shards[1]}"):
        resolve_model_source(path)


def test_truncated_safetensors(llama_copy):
    path = os.path.join(llama_copy, "model.safetensors")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file"):
        load(llama_copy)


def test_tensor_of_wrong_shape(llama_copy):
    edit_weights(llama_copy, lambda t: t.update({"model.layers.1.self_attn.k_proj.weight": torch.zeros(16, 64)}))
    with pytest.raises(ValueError, match=r"'model\.layers\.1\.self_attn\.k_proj\.weight'.*\(16, 64\).*\(32, 64\)"):
        load(llama_copy)


def test_unexpected_tensor_name(llama_copy):
    edit_weights(llama_copy, lambda t: t.update({"model.layers.0.mlp.extra_proj.weight": torch.zeros(2, 2)}))
    with pytest.raises(ValueError, match=r"'model\.layers\.0\.mlp\.extra_proj\.weight'.*matches no parameter"):
        load(llama_copy)


def test_missing_tensor(llama_copy):
    edit_weights(llama_copy, lambda t: (t.pop("model.layers.0.self_attn.v_proj.weight"), t.pop("model.norm.weight")))
    with pytest.raises(ValueError, match=r"lacks .*model\.layers\.0\.self_attn\.v_proj\.weight.*model\.norm\.weight"):
        load(llama_copy)


# ---- config forms, eos, dtypes ------------------------------------------------------------

def test_classic_and_new_config_forms_agree(tmp_path):
    from transformers import AutoModelForCausalLM

    new = make_tiny_checkpoint("llama3", tmp_path / "new", rope_form="new")
    classic = make_tiny_checkpoint("llama3", tmp_path / "classic", rope_form="classic", max_shard_size="40KB")
    with open(os.path.join(classic, "config.json")) as f:
        assert "rope_parameters" not in json.load(f)
    (m_new, c_new), (m_classic, c_classic) = load(new), load(classic)
    assert c_new == c_classic and c_new.rope_scaling["rope_type"] == "llama3"
    ids = torch.arange(3, 40)
    out = forward_logits(m_classic, c_classic, ids)
    assert torch.equal(forward_logits(m_new, c_new, ids), out)
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(classic, dtype=torch.float32)(ids[None]).logits[0]
    assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_generation_config_eos_list(tmp_path):
    path = make_tiny_checkpoint("qwen3", tmp_path / "q3", generation_eos_ids=[2, 7, 9])
    source = resolve_model_source(path)
    assert source.generation_eos_ids == (2, 7, 9)
    assert model_config_from_source(source).eos_token_ids == (2, 7, 9)
    assert source.tokenizer_path is None and load_tokenizer(source) is None


@pytest.mark.parametrize("dtype,expected", [("auto", torch.bfloat16 if cpu_prefers_bf16() else torch.float32),
                                            ("float32", torch.float32),
                                            ("bfloat16", torch.bfloat16), ("float16", torch.float16)])
def test_dtype_gives_parameter_dtype(llama_dir, dtype, expected):
    model, config = load(llama_dir, dtype)
    assert config.dtype == expected
    assert {p.dtype for p in model.parameters()} == {expected}
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    logits = forward_logits(model, config, torch.arange(3, 20))
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    ref = forward_logits(*load(llama_dir, "float32"), torch.arange(3, 20))
    assert (logits - ref).abs().max() <= 0.05 * ref.abs().max()  # 16-bit rounding only


def test_auto_dtype_follows_16bit_checkpoint(llama_copy):
    edit_config(llama_copy, dtype="bfloat16", torch_dtype="bfloat16")
    assert model_config_from_source(resolve_model_source(llama_copy)).dtype == torch.bfloat16


# ---- dummy weights ------------------------------------------------------------------------

def _shrunk_config(tmp_path, name: str, **shrink) -> str:
    with open(os.path.join(DATA, name)) as f:
        cfg = json.load(f)
    cfg.update(shrink)
    folder = tmp_path / name.replace("-config.json", "")
    folder.mkdir()
    with open(folder / "config.json", "w") as f:
        json.dump(cfg, f)
    return str(folder)


def test_dummy_from_shrunk_qwen3_config(tmp_path):
    folder = _shrunk_config(tmp_path, "qwen3-0.6b-config.json", num_hidden_layers=2, hidden_size=64,
                            intermediate_size=96, vocab_size=512, num_attention_heads=4, num_key_value_heads=2,
                            head_dim=32)
    source = resolve_model_source(os.path.join(folder, "config.json"), load_format="dummy")
    assert (source.format, source.tokenizer_path) == ("dummy", None)
    config = model_config_from_source(source)  # config says bfloat16: auto -> bfloat16 on CPU
    assert config.qk_norm and config.tie_word_embeddings and config.dtype == torch.bfloat16
    model = load_model(source, config, "cpu")
    again = load_model(resolve_model_source(folder, "dummy"), config, "cpu")
    for (name, p), q in zip(model.named_parameters(), again.parameters()):
        assert torch.equal(p, q), f"dummy weights not deterministic: {name}"
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.all(model.model.layers[0].self_attn.q_norm.weight == 1)
    assert 0.01 < model.model.layers[1].mlp.down_proj.weight.float().std() < 0.03
    logits = forward_logits(model, config, torch.arange(1, 30))
    assert logits.shape == (29, 512) and torch.isfinite(logits).all()


def test_dummy_from_shrunk_llama31_config(tmp_path):
    folder = _shrunk_config(tmp_path, "llama-3.1-8b-config.json", num_hidden_layers=1, hidden_size=64,
                            intermediate_size=96, vocab_size=300, num_attention_heads=4, num_key_value_heads=2)
    source = resolve_model_source(folder, "dummy")
    config = model_config_from_source(source, dtype="float32")
    assert config.rope_scaling["rope_type"] == "llama3" and config.eos_token_ids == (128001, 128008, 128009)
    model = load_model(source, config, "cpu")
    assert torch.isfinite(forward_logits(model, config, torch.arange(1, 20))).all()
