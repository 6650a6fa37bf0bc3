"""Saved engines on the CPU: every quantization builds, saves and loads back to the same tokens and
logits, within its quantization error of the unquantized model; broken folders are refused with
what is wrong and the command that rebuilds them."""
from __future__ import annotations

import pytest

from tests.quantization.engine_cases import (CALIB, ENGINE_CASES, FLOAT_LOGITS_TOL, build_save_reload, generate,
                                             logits_rel_error, prompts, quant_config, tokens)


@pytest.fixture(scope="module")
def float_reference(tiny_llama):
    return generate(tiny_llama, "cpu", prompts(), dtype="float32")


@pytest.mark.parametrize("algo,kv", ENGINE_CASES)
def test_quantized_engine_round_trip(tiny_llama, float_reference, tmp_path, algo, kv):
    run = build_save_reload(tiny_llama, "cpu", quant_config(algo, kv), str(tmp_path / "engine"))
    assert tokens(run.loaded) == tokens(run.built)
    assert logits_rel_error(run.loaded, run.built) == 0.0  # the very tensors it ran with
    err = logits_rel_error(run.built, float_reference)
    print(f"{algo} kv={kv}: context logits {err:.4f} from the float model")
    assert 0 < err <= FLOAT_LOGITS_TOL[algo]


def test_gptq_gathers_the_hessians_a_window_of_layers_at_a_time(tiny_llama, float_reference, tmp_path, monkeypatch):
    """With room for one [K, K] Hessian at a time, every linear gets its own calibration pass (through
    the layers quantized before it), and the engine is as close to the float model as in one pass."""
    from tritium.quantization import calibration, gptq

    passes = []
    collect = calibration.collect_statistics
    monkeypatch.setattr(calibration, "collect_statistics",
                        lambda *a, **kw: passes.append(kw["xtx_for"]) or collect(*a, **kw))
    monkeypatch.setattr(gptq, "HESSIAN_BUDGET", 1)
    run = build_save_reload(tiny_llama, "cpu", quant_config("W4A16_GPTQ", None), str(tmp_path / "engine"))
    assert all(len(p) == 1 for p in passes) and len(set(passes)) == len(passes) >= 8  # 2 layers x 4 linears
    assert tokens(run.loaded) == tokens(run.built)
    assert 0 < logits_rel_error(run.built, float_reference) <= FLOAT_LOGITS_TOL["W4A16_GPTQ"]


# ---- broken folders ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fp8_engine(tiny_llama, tmp_path_factory):
    """A saved FP8 + FP8-KV engine of the tiny Llama (built once; tests corrupt copies)."""
    from tritium.llm.llm import LLM

    path = str(tmp_path_factory.mktemp("engines") / "fp8")
    with LLM(tiny_llama, device="cpu", dtype="float32", max_seq_len=64, quant_config=quant_config("FP8", "FP8"),
             calib_config=CALIB) as llm:
        llm.save(path)
    return path


def _copy(engine: str, tmp_path) -> str:
    import shutil

    dst = str(tmp_path / "copy")
    shutil.copytree(engine, dst)
    return dst


def _edit_json(path: str, **changes) -> None:
    import json

    with open(path) as f:
        data = json.load(f)
    data.update(changes)
    with open(path, "w") as f:
        json.dump(data, f)


def _flip_byte(path: str, offset_fraction: float) -> None:
    import os

    with open(path, "r+b") as f:
        f.seek(int(os.path.getsize(path) * offset_fraction))
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))


def _truncate(path: str) -> None:
    import os

    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


BREAKAGES = {
    "format version": (lambda d: _edit_json(f"{d}/tritium_engine.json", format_version=99),
                       "format version 99; this tritium reads version 1"),
    "missing weights": (lambda d: __import__("os").remove(f"{d}/model.safetensors"), "model.safetensors is missing"),
    "truncated weights": (lambda d: _truncate(f"{d}/model.safetensors"), "model.safetensors has .* bytes, .* were written"),
    "bad checksum": (lambda d: _flip_byte(f"{d}/model.safetensors", 0.6), "model.safetensors fails its CRC32 check"),
    "changed config": (lambda d: _edit_json(f"{d}/tritium_engine.json", dtype="float32", note="edited"),
                       "tritium_engine.json fails its CRC32 check|tritium_engine.json has"),
    "no manifest": (lambda d: __import__("os").remove(f"{d}/manifest.json"), "manifest.json is missing: the folder is "
                                                                             "incomplete"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_engine_folders_say_what_is_wrong_and_how_to_rebuild(fp8_engine, tiny_llama, tmp_path, breakage):
    from tritium.llm.llm import LLM
    from tritium.loader.saved_engine import EngineFormatError

    engine = _copy(fp8_engine, tmp_path)
    breaker, problem = BREAKAGES[breakage]
    breaker(engine)
    with pytest.raises(EngineFormatError, match=problem) as err:
        LLM(engine, device="cpu")
    message = str(err.value)
    assert engine in message
    assert f"Rebuild it: tritium build {tiny_llama} --output <folder> --dtype float32 --quantization FP8 " \
           "--kv-cache-dtype fp8" in message


def test_a_load_failure_of_an_intact_engine_is_not_blamed_on_its_files(fp8_engine, tmp_path, monkeypatch):
    """The files are checked while the weights load: with intact files the load's own error comes
    through; with a damaged file the check's error replaces it (the loader's failure chained)."""
    from tritium.engine import factory
    from tritium.llm.llm import LLM
    from tritium.loader.saved_engine import EngineFormatError

    def failing_load(*args, **kwargs):
        raise RuntimeError("injected loader fault")

    monkeypatch.setattr(factory, "load_model", failing_load)
    with pytest.raises(RuntimeError, match="injected loader fault"):
        LLM(fp8_engine, device="cpu")
    engine = _copy(fp8_engine, tmp_path)
    _flip_byte(f"{engine}/model.safetensors", 0.6)
    with pytest.raises(EngineFormatError, match="model.safetensors fails its CRC32 check") as err:
        LLM(engine, device="cpu")
    assert "injected loader fault" in str(err.value.__cause__)


def test_fp8_engine_on_a_gpu_without_fp8_tensor_cores(fp8_engine, monkeypatch):
    import torch

    from tritium.loader.saved_engine import EngineFormatError, check_engine_device, read_engine

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # an A100
    with pytest.raises(EngineFormatError, match=r"needs FP8 tensor cores \(compute capability 8.9\+.*this GPU is "
                                                r"8.0.*Supported here: W8A16, W4A16.*Rebuild it: tritium build"):
        check_engine_device(read_engine(fp8_engine), torch.device("cuda", 0))
    check_engine_device(read_engine(fp8_engine), torch.device("cpu"))  # the CPU emulates FP8


def test_engine_keeps_the_gemm_tiles_timed_on_its_gpu(fp8_engine, tmp_path, monkeypatch):
    """Built on the CPU nothing is timed (kernel_tiles null); an engine written on a GPU carries its
    tile choices, and loading hands them to kernels/tile_choices.py with the device it loads on
    (which adopts them only on the same GPU model: tests/kernels/test_tile_choices.py)."""
    import json
    import os

    import torch

    from tritium.kernels import tile_choices
    from tritium.llm.llm import LLM
    from tritium.loader.cache import write_manifest
    from tritium.loader.saved_engine import FORMAT_VERSION

    with open(os.path.join(fp8_engine, "tritium_engine.json")) as f:
        assert json.load(f)["kernel_tiles"] is None
    engine = _copy(fp8_engine, tmp_path)
    tiles = {"gpu": "NVIDIA H200", "triton": "3.6.0", "choices": [
        {"weight": 0, "act": 1, "n": 6144, "k": 4096, "group": 0, "dtype": "bfloat16", "one_row": True,
         "block_n": 64, "block_k": 128, "split_k": 4, "num_warps": 4, "num_stages": 4, "gemv": False}]}
    _edit_json(f"{engine}/tritium_engine.json", kernel_tiles=tiles)
    os.remove(f"{engine}/manifest.json")
    write_manifest(engine, {"format_version": FORMAT_VERSION})  # as the GPU's build wrote it
    seen = []
    real = tile_choices.import_choices
    monkeypatch.setattr(tile_choices, "import_choices", lambda saved, dev: seen.append((saved, dev)) or real(saved, dev))
    with LLM(engine, device="cpu") as llm:
        assert llm.generate([[1, 2, 3]], use_tqdm=False)[0].outputs[0].token_ids  # loads and runs on the CPU
    assert seen == [(tiles, torch.device("cpu"))]


def test_engine_refuses_another_quantization_or_dtype(fp8_engine):
    from tritium.llm.llm import LLM
    from tritium.quantization import QuantConfig

    with pytest.raises(ValueError, match="is a saved engine with quantization FP8/FP8.*cannot be quantized again "
                                         "at load as W8A16/FP8.*tritium build"):
        LLM(fp8_engine, device="cpu", quant_config=QuantConfig(quant_algo="W8A16"))
    with pytest.raises(ValueError, match="built for dtype float32; dtype='bfloat16' would need a rebuild"):
        LLM(fp8_engine, device="cpu", dtype="bfloat16")


def test_save_never_overwrites_a_folder_that_is_not_an_engine(tiny_llama, tmp_path):
    from tritium.llm.llm import LLM

    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "todo.txt").write_text("mine")
    with LLM(tiny_llama, device="cpu", dtype="float32", max_seq_len=64) as llm:
        with pytest.raises(ValueError, match="exists and is not a saved engine; choose a new or empty folder"):
            llm.save(str(keep))
    assert (keep / "todo.txt").read_text() == "mine"


def test_saved_engine_is_readable_as_the_umask_allows(tiny_llama, tmp_path):
    """An engine built by one user is served by another: its folder and files get the permissions
    a plain mkdir / open would (here umask 027: 750 and 640), not the temporary folder's 700 and
    safetensors' 600."""
    import os
    import stat

    from tritium.llm.llm import LLM

    dst = tmp_path / "engine"
    previous = os.umask(0o027)
    try:
        with LLM(tiny_llama, device="cpu", dtype="float32", max_seq_len=64) as llm:
            llm.save(str(dst))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o750
    modes = {name: stat.S_IMODE(os.stat(dst / name).st_mode) for name in os.listdir(dst)}
    assert "model.safetensors" in modes and set(modes.values()) == {0o640}, modes
