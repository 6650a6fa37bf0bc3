"""dtype 'auto': bfloat16 on CPUs with bfloat16 instructions, else the checkpoint's 16-bit type or
float32; explicit requests are kept."""
from __future__ import annotations

import pytest
import torch

import tritium.config as config_mod
from tritium.config import resolve_dtype

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cpu(monkeypatch, native):
    monkeypatch.setattr(config_mod, "cpu_has_native_bf16", lambda: native)
    unspecified = torch.bfloat16 if native else torch.float32
    assert resolve_dtype("auto", None, CPU) == unspecified  # e.g. GGUF files
    assert resolve_dtype("auto", "float32", CPU) == unspecified
    assert resolve_dtype("auto", "bfloat16", CPU) == torch.bfloat16
    assert resolve_dtype("auto", "float16", CPU) == torch.bfloat16  # CPU float16 matmuls are slow
    assert resolve_dtype("float32", None, CPU) == torch.float32  # explicit requests win
    assert resolve_dtype(torch.float16, None, CPU) == torch.float16


def test_auto_on_gpu_ignores_the_cpu(monkeypatch):
    monkeypatch.setattr(config_mod, "cpu_has_native_bf16", lambda: False)
    assert resolve_dtype("auto", None, CUDA) == torch.bfloat16
    assert resolve_dtype("auto", "float16", CUDA) == torch.float16


def test_cpu_has_native_bf16_is_a_bool():
    assert isinstance(config_mod.cpu_has_native_bf16(), bool)
