"""QuantConfig takes TensorRT-LLM's names; what tritium does not implement is a clear error listing
what it does, never a silent fallback; exclude_modules match HF or fused names."""
from __future__ import annotations

import pytest

from tritium.quantization import ModelQuantization, QuantAlgo, QuantConfig
from tritium.quantization.config import device_support_error


def test_names_and_members_are_accepted_in_any_case():
    assert QuantConfig(quant_algo="w4a16_awq").quant_algo is QuantAlgo.W4A16_AWQ
    assert QuantConfig(quant_algo=QuantAlgo.FP8, kv_cache_quant_algo="int8").kv_cache_quant_algo is QuantAlgo.INT8
    assert not QuantConfig(quant_algo="NO_QUANT").is_quantized


@pytest.mark.parametrize("kwargs,message", [
    (dict(quant_algo="NVFP4"), "quant_algo=NVFP4 is not implemented in tritium; supported: FP8, "
                               "FP8_PER_CHANNEL_PER_TOKEN, W8A16, W4A16, W4A16_AWQ, W4A16_GPTQ, W8A8_SQ_PER_CHANNEL"),
    (dict(quant_algo="INT4_MAGIC"), "quant_algo='INT4_MAGIC' is not a quantization algorithm; tritium supports FP8"),
    (dict(kv_cache_quant_algo="NVFP4"), "kv_cache_quant_algo=NVFP4 is not implemented in tritium; supported: FP8, INT8"),
    (dict(quant_algo="W4A16", group_size=100), "group_size must be a positive multiple of 32"),
    (dict(smoothquant_val=1.5), "smoothquant_val must be in"),
    (dict(exclude_modules="lm_head"), "exclude_modules must be a list"),
])
def test_what_tritium_does_not_implement_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        QuantConfig(**kwargs)


def test_cli_refuses_an_unimplemented_algorithm(capsys):
    from tritium.entrypoints.cli import main

    assert main(["build", "--dry-run", "llama-3.1-8b", "--quantization", "NVFP4"]) == 2
    assert "quant_algo=NVFP4 is not implemented in tritium" in capsys.readouterr().err


def test_exclude_modules_match_hugging_face_and_fused_names():
    quant = ModelQuantization(QuantConfig(quant_algo="W8A16", exclude_modules=["*.down_proj", "model.layers.0.*",
                                                                               "k_proj"]))
    assert quant.linear_method("model.layers.1.mlp.down_proj") is None
    assert quant.linear_method("model.layers.0.mlp.gate_up_proj") is None
    assert quant.linear_method("model.layers.3.self_attn.qkv_proj") is None  # holds k_proj
    assert quant.linear_method("model.layers.3.self_attn.o_proj") is not None


def test_fp8_needs_fp8_tensor_cores_on_a_gpu():
    fp8 = QuantConfig(quant_algo="FP8")
    assert "compute capability 8.9+" in device_support_error(fp8, "cuda", (8, 0))
    assert device_support_error(fp8, "cuda", (9, 0)) is None
    assert device_support_error(fp8, "cpu") is None  # emulated
    assert device_support_error(QuantConfig(quant_algo="W4A16"), "cuda", (8, 0)) is None


class _WordTokenizer:
    """One id a whitespace-separated word: enough to count calibration tokens."""

    def encode(self, text, add_special_tokens=False):
        return [len(w) for w in text.split()]


def test_calibration_says_when_the_text_is_shorter_than_asked(tmp_path, caplog):
    """--calib-size asks for samples of --calib-max-seq-len tokens; a text too short for them gives
    what it holds, and a warning that says so and how to get more (never silently fewer)."""
    from tritium.quantization import CalibConfig
    from tritium.quantization.calibration import calibration_samples

    text = tmp_path / "calib.txt"
    text.write_text("word " * 1000)
    with caplog.at_level("INFO", logger="tritium.quantization.calibration"):
        samples = calibration_samples(_WordTokenizer(), CalibConfig(calib_dataset=str(text), calib_batches=8,
                                                                    calib_max_seq_length=300), 100)
    assert [len(s) for s in samples] == [300, 300, 300, 100]
    assert "4 samples of up to 300 tokens (8 asked for)" in caplog.text and "--calib-file" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="tritium.quantization.calibration"):
        samples = calibration_samples(_WordTokenizer(), CalibConfig(calib_dataset=str(text), calib_batches=2,
                                                                    calib_max_seq_length=300), 100)
    assert len(samples) == 2 and "WARNING" not in caplog.text and "2 samples of up to 300 tokens" in caplog.text


@pytest.mark.parametrize("flag", ["--calib-size", "--calib-max-seq-len"])
def test_cli_names_the_calibration_flag_it_refuses(capsys, flag):
    from tritium.entrypoints.cli import main

    assert main(["build", "--quantization", "FP8", flag, "0", "--output", "unused"]) != 0
    assert f"({flag}) must be a positive integer, got 0" in capsys.readouterr().err
