"""dtype 'auto': bfloat16 on x86 CPUs with AVX2 or better (native bf16 instructions or not), else
the checkpoint's 16-bit type or float32; explicit requests are kept. Native-bf16 detection follows
ATen's dispatch level, so a process limited to AVX2 reports none on any CPU."""
from __future__ import annotations

import pytest
import torch

import tritium.config as config_mod
from tritium.config import resolve_dtype

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("prefers_bf16", [True, False])
def test_auto_on_cpu(monkeypatch, prefers_bf16):
    monkeypatch.setattr(config_mod, "cpu_prefers_bf16", lambda: prefers_bf16)
    unspecified = torch.bfloat16 if prefers_bf16 else torch.float32
    assert resolve_dtype("auto", None, CPU) == unspecified  # e.g. GGUF files
    assert resolve_dtype("auto", "float32", CPU) == unspecified
    assert resolve_dtype("auto", "bfloat16", CPU) == torch.bfloat16
    assert resolve_dtype("auto", "float16", CPU) == torch.bfloat16  # CPU float16 matmuls are slow
    assert resolve_dtype("float32", None, CPU) == torch.float32  # explicit requests win
    assert resolve_dtype(torch.float16, None, CPU) == torch.float16


def test_auto_on_gpu_ignores_the_cpu(monkeypatch):
    monkeypatch.setattr(config_mod, "cpu_prefers_bf16", lambda: False)
    assert resolve_dtype("auto", None, CUDA) == torch.bfloat16
    assert resolve_dtype("auto", "float16", CUDA) == torch.float16


@pytest.mark.parametrize("capability,native,prefers", [
    ("AVX512", None, True),  # native: whatever the hardware says; bf16 preferred either way
    ("AVX2", False, True),  # AVX2: never native, bf16 weights still the faster choice
    ("DEFAULT", False, False),  # no vector ISA: float32
])
def test_detection_follows_atens_dispatch_level(monkeypatch, capability, native, prefers):
    hardware = config_mod.cpu_has_native_bf16()
    monkeypatch.setattr(config_mod, "cpu_capability", lambda: capability)
    config_mod.cpu_has_native_bf16.cache_clear()
    try:
        assert config_mod.cpu_has_native_bf16() is (hardware if native is None else native)
        assert config_mod.cpu_prefers_bf16() is prefers
    finally:
        config_mod.cpu_has_native_bf16.cache_clear()


def test_native_bf16_needs_the_hardware_and_onednn(monkeypatch):
    monkeypatch.setattr(config_mod, "cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    config_mod.cpu_has_native_bf16.cache_clear()
    try:
        assert config_mod.cpu_has_native_bf16() is False  # oneDNN limited (ONEDNN_MAX_CPU_ISA)
    finally:
        config_mod.cpu_has_native_bf16.cache_clear()


def test_cpu_capability_is_atens():
    assert config_mod.cpu_capability() == torch.backends.cpu.get_cpu_capability()
