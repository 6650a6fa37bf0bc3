"""The weight-streaming GEMM's tile choices as a saved engine keeps them: exported per GPU,
adopted back only on the same GPU model and Triton version, malformed records named."""
from __future__ import annotations

import json
import logging

import pytest
import torch
import triton

from tritium.kernels import streaming_gemm, tile_choices
from tritium.kernels.streaming_gemm import CUBLAS, ChoiceKey, GemvConfig

CUDA0 = torch.device("cuda", 0)
TILE = GemvConfig(64, 128, 4, num_warps=4, num_stages=4)
ROW_TILE = GemvConfig(64, 256, 2, num_warps=4, num_stages=3, gemv=True)


@pytest.fixture
def chosen():
    """A clean choice table for the test, the process's own restored after it."""
    saved = dict(streaming_gemm._CHOSEN)
    streaming_gemm._CHOSEN.clear()
    yield streaming_gemm._CHOSEN
    streaming_gemm._CHOSEN.clear()
    streaming_gemm._CHOSEN.update(saved)


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device named like an H200, without one (the functions only ask for its name)."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def _fill(chosen):
    fp8 = ChoiceKey(streaming_gemm.FP8, streaming_gemm.ACT_FP8_STATIC, 6144, 4096, 0, torch.bfloat16, CUDA0, False)
    chosen[fp8] = TILE
    chosen[ChoiceKey(streaming_gemm.INT4, 0, 14336, 4096, 128, torch.float16, CUDA0, True)] = ROW_TILE
    chosen[ChoiceKey(streaming_gemm.DENSE, 0, 128256, 4096, 0, torch.bfloat16, CUDA0, True)] = CUBLAS
    chosen[ChoiceKey(streaming_gemm.INT8, 0, 64, 64, 0, torch.float32, torch.device("cpu"), True)] = TILE  # not a GPU's


def test_export_then_import_restores_every_choice(chosen, fake_gpu):
    _fill(chosen)
    before = {k: v for k, v in chosen.items() if k.device.type == "cuda"}
    saved = json.loads(json.dumps(tile_choices.export_choices(torch.device("cuda"))))  # through JSON, as saved
    assert saved["gpu"] == "NVIDIA H200" and saved["triton"] == triton.__version__
    assert len(saved["choices"]) == 3  # the CPU entry is not a GPU choice
    chosen.clear()
    assert tile_choices.import_choices(saved, CUDA0) == 3
    assert chosen == before
    assert tile_choices.import_choices(saved, CUDA0) == 0  # choices already made here stay


def test_choices_from_another_gpu_triton_or_kernel_version_are_timed_again(chosen, fake_gpu, caplog):
    _fill(chosen)
    saved = tile_choices.export_choices(CUDA0)
    chosen.clear()
    with caplog.at_level(logging.INFO, logger="tritium.kernels.tile_choices"):
        assert tile_choices.import_choices({**saved, "gpu": "NVIDIA H100 80GB HBM3"}, CUDA0) == 0
        assert tile_choices.import_choices({**saved, "triton": "0.0.1"}, CUDA0) == 0
        assert tile_choices.import_choices({**saved, "kernels": streaming_gemm.KERNEL_VERSION - 1}, CUDA0) == 0
        assert tile_choices.import_choices({k: v for k, v in saved.items() if k != "kernels"}, CUDA0) == 0  # older
    assert not chosen and "timing them again" in caplog.text


def test_malformed_records_are_named_and_ignored(chosen, fake_gpu, caplog):
    bad = {"weight": 0, "act": 0, "n": 64, "k": 64, "group": 0, "dtype": "bfloat16", "one_row": True,
           "block_n": 64}  # no block_k, split_k, ...
    with pytest.raises(ValueError, match="malformed"):
        tile_choices.adopt([bad], 0)
    not_a_dtype = dict(bad, dtype="nn", block_k=128, split_k=1, num_warps=4, num_stages=4, gemv=False)
    with pytest.raises(ValueError, match="not a dtype"):
        tile_choices.adopt([not_a_dtype], 0)
    saved = {"gpu": "NVIDIA H200", "triton": triton.__version__, "kernels": streaming_gemm.KERNEL_VERSION,
             "choices": [bad]}
    assert tile_choices.import_choices(saved, CUDA0) == 0
    assert not chosen and "ignoring the saved GEMM tile choices" in caplog.text


def test_a_record_saved_before_a_field_existed_takes_its_default(chosen, fake_gpu):
    old = {"weight": streaming_gemm.INT4, "act": 0, "n": 64, "k": 128, "group": 128, "dtype": "bfloat16",
           "one_row": True, "block_n": 64, "block_k": 128, "split_k": 1, "num_warps": 4, "num_stages": 3,
           "gemv": True}  # no int4_magic
    assert tile_choices.adopt([old], 0) == 1
    (cfg,) = chosen.values()
    assert cfg == GemvConfig(64, 128, 1, num_warps=4, num_stages=3, gemv=True) and not cfg.int4_magic


def test_nothing_is_kept_or_taken_off_cuda(chosen, fake_gpu):
    _fill(chosen)
    saved = tile_choices.export_choices(CUDA0)  # this GPU's, valid on it
    assert tile_choices.export_choices(torch.device("cpu")) is None
    chosen.clear()
    assert tile_choices.import_choices(saved, torch.device("cpu")) == 0 and not chosen
    assert tile_choices.import_choices(saved, CUDA0) == 3  # the same records do load on the GPU
