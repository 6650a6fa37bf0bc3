"""`tritium build`: the engine folder it writes loads to the same tokens; `--dry-run` prints the
memory plan from config.json alone for any quantization, with weights that match Meta's published
parameter count of Llama-3.1-8B and the loaded model's own parameters."""
from __future__ import annotations

import re

import pytest

from tests.quantization.engine_cases import PARAMS, prompts, tokens
from tritium.entrypoints.cli import main
from tritium.llm.llm import LLM
from tritium.loader import load_model, model_config_from_source, resolve_model_source
from tritium.quantization import ModelQuantization, QuantConfig
from tritium.worker.memory_estimate import estimate_weight_bytes
from tritium.worker.memory_plan import weights_bytes

LLAMA_8B_PARAMS = 8_030_261_248  # Meta's model card for Llama-3.1-8B
LLAMA_8B_NON_LINEAR = 2 * 128256 * 4096 + 65 * 4096  # embeddings + LM head (untied), 65 RMSNorms


def dry_run(capsys, *args: str) -> dict:
    assert main(["build", "--dry-run", *args]) == 0
    out = capsys.readouterr().out
    gib = lambda name: float(re.search(rf"{name}\s+([\d.]+) GiB", out).group(1))  # noqa: E731
    cap = re.search(r"KV cache capacity\s+(\d+) tokens \((\d+) bytes each", out)
    seqs = re.search(r"sequences of (\d+) tokens at once: (\d+)", out)
    return {"weights": gib("weights"), "activations": gib(r"activations \(one step\)"), "graphs": gib("CUDA graph pool"),
            "kv_tokens": int(cap.group(1)), "kv_bytes_per_token": int(cap.group(2)), "max_seq_len": int(seqs.group(1)),
            "sequences": int(seqs.group(2)), "text": out}


def test_dry_run_of_llama_8b_for_every_quantization(capsys):
    args = ("llama-3.1-8b", "--gpu-memory", "80GiB", "--max-seq-len", "8192")
    bf16 = dry_run(capsys, *args)
    assert "from config.json alone" in bf16["text"] and "quantization none" in bf16["text"]
    assert bf16["weights"] == pytest.approx(LLAMA_8B_PARAMS * 2 / 2**30, abs=0.01)
    assert bf16["kv_bytes_per_token"] == 2 * 32 * 8 * 128 * 2  # k and v, 32 layers, 8 KV heads of 128, bf16
    assert bf16["sequences"] == bf16["kv_tokens"] // 8192 > 0
    used = bf16["weights"] + bf16["activations"] + bf16["graphs"]
    assert bf16["kv_tokens"] * bf16["kv_bytes_per_token"] / 2**30 == pytest.approx(0.9 * (80 - used), rel=1e-3)

    linear = LLAMA_8B_PARAMS - LLAMA_8B_NON_LINEAR
    fp8 = dry_run(capsys, *args, "--quantization", "FP8")
    assert fp8["weights"] == pytest.approx((linear + 2 * LLAMA_8B_NON_LINEAR) / 2**30, rel=1e-3)  # + scales
    w4 = dry_run(capsys, *args, "--quantization", "W4A16")
    assert w4["weights"] == pytest.approx((linear * (0.5 + 3 / 128) + 2 * LLAMA_8B_NON_LINEAR) / 2**30, rel=1e-3)
    assert bf16["kv_tokens"] < fp8["kv_tokens"] < w4["kv_tokens"]  # the memory the weights free goes to the cache

    fp8_kv = dry_run(capsys, *args, "--quantization", "FP8", "--kv-cache-dtype", "fp8")
    assert fp8_kv["kv_bytes_per_token"] == fp8["kv_bytes_per_token"] // 2
    assert abs(fp8_kv["kv_tokens"] - 2 * fp8["kv_tokens"]) <= 16  # twice the tokens (whole blocks)
    assert fp8_kv["sequences"] == fp8_kv["kv_tokens"] // 8192


@pytest.mark.parametrize("memory,message", [
    ("80", "a memory size of '80' would be 80 bytes; give a unit, e.g. 80GiB"),
    ("8GiB", r"the weights \(14.96 GiB\) do not fit in a GPU of 8.00 GiB: quantize them"),
    ("15.5GiB", r"budget \(0.0 MiB: 90% of 0.0 GiB free GPU memory after weights .*\) holds no block of 16 tokens"),
])
def test_dry_run_says_why_a_gpu_is_too_small(capsys, memory, message):
    """A size without a unit, weights larger than the GPU, and no room left for one KV block are
    each named (not a bare 'budget 0.0 MiB')."""
    assert main(["build", "--dry-run", "llama-3.1-8b", "--gpu-memory", memory]) != 0
    assert re.search(message, capsys.readouterr().err)


def test_dry_run_of_a_config_folder_is_capped_by_what_sequences_can_use(capsys, tiny_llama):
    plan = dry_run(capsys, tiny_llama, "--gpu-memory", "2GiB", "--max-seq-len", "128", "--max-batch-size", "4")
    assert plan["kv_tokens"] == 4 * 128 and plan["sequences"] == 4
    assert "all max_batch_size sequences at max_seq_len fit" in plan["text"]


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "smollm"])
@pytest.mark.parametrize("algo", [None, "W8A16", "W4A16", "FP8", "FP8_PER_CHANNEL_PER_TOKEN", "W8A8_SQ_PER_CHANNEL"])
def test_estimated_weights_are_the_loaded_parameters(tmp_path_factory, family, algo):
    from tests.utils.tiny_models import make_tiny_checkpoint

    path = _tiny(tmp_path_factory, family, make_tiny_checkpoint)
    source = resolve_model_source(path, "dummy")
    config = model_config_from_source(source, dtype="bfloat16")
    quant = QuantConfig(quant_algo=algo, group_size=64)
    model = load_model(source, config, "cpu", ModelQuantization(quant), lambda: [list(range(1, 33))])
    assert estimate_weight_bytes(config, quant) == weights_bytes(model)


_TINY: dict[str, str] = {}


def _tiny(factory, family, make):
    if family not in _TINY:
        _TINY[family] = make(family, factory.mktemp(family))
    return _TINY[family]


def test_build_writes_an_engine_that_gives_the_same_tokens(capsys, tiny_llama, tmp_path):
    out = str(tmp_path / "engine")
    code = main(["build", tiny_llama, "--output", out, "--quantization", "W8A16", "--kv-cache-dtype", "int8",
                 "--device", "cpu", "--dtype", "float32", "--max-seq-len", "64", "--calib-size", "2",
                 "--calib-max-seq-len", "32"])
    printed = capsys.readouterr().out
    assert code == 0 and "saved in" in printed and "KV cache capacity" in printed
    with LLM(out, device="cpu") as engine:
        assert engine.quant_config.to_dict()["quant_algo"] == "W8A16"
        assert engine.quant_config.to_dict()["kv_cache_quant_algo"] == "INT8"
        saved = tokens(engine.generate(prompts(), PARAMS))
    from tritium.quantization import CalibConfig

    with LLM(tiny_llama, device="cpu", dtype="float32", max_seq_len=64,
             quant_config=QuantConfig(quant_algo="W8A16", kv_cache_quant_algo="INT8"),
             calib_config=CalibConfig(calib_batches=2, calib_max_seq_length=32)) as built:
        assert tokens(built.generate(prompts(), PARAMS)) == saved


def test_build_needs_an_output_folder(capsys, tiny_llama):
    assert main(["build", tiny_llama]) == 2
    assert "error: --output <folder> is required" in capsys.readouterr().err


def test_dry_run_takes_extra_llm_api_options(capsys, tmp_path):
    """The plan follows --extra-llm-api-options as the engine would: its KV memory fraction, no
    CUDA-graph pool when cuda_graph_config is null, its batch limit."""
    args = ("llama-3.1-8b", "--gpu-memory", "80GiB", "--max-seq-len", "8192")
    base = dry_run(capsys, *args)
    options = tmp_path / "options.yaml"
    options.write_text("kv_cache_config:\n  free_gpu_memory_fraction: 0.5\ncuda_graph_config: null\n")
    tuned = dry_run(capsys, *args, "--extra-llm-api-options", str(options))
    assert "50% of" in tuned["text"] and "90% of" in base["text"]
    assert tuned["graphs"] == 0 < base["graphs"]
    assert tuned["kv_tokens"] < base["kv_tokens"] * 0.6
    options.write_text("enforce_eager: true\n")
    assert dry_run(capsys, *args, "--extra-llm-api-options", str(options))["graphs"] == 0
    options.write_text("cuda_graph_config:\n  batch_sizes: [1, 64]\n")  # the largest graph is 64 sequences
    assert 0 < dry_run(capsys, *args, "--extra-llm-api-options", str(options))["graphs"] < base["graphs"]
    options.write_text("max_batch_size: 16\n")
    small = dry_run(capsys, *args, "--extra-llm-api-options", str(options))
    assert small["sequences"] == 16 and "all max_batch_size sequences at max_seq_len fit" in small["text"]
