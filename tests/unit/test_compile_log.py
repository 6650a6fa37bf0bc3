"""Triton compilations are timed and, once an engine serves, reported as warnings naming the kernel
(a step that compiles stalls all its requests)."""
import logging

import pytest

from tritium.kernels import compile_log


@pytest.fixture
def fresh_log(monkeypatch):
    monkeypatch.setattr(compile_log, "compiled_while_serving", [])
    monkeypatch.setattr(compile_log, "_serving", False)
    monkeypatch.setattr(compile_log, "_started", {})
    yield compile_log


def test_a_compilation_while_serving_is_a_timed_warning(fresh_log, caplog):
    caplog.set_level(logging.DEBUG, logger="tritium.kernels.compile_log")
    assert fresh_log._before(key="k1", repr="rmsnorm_kernel[num_warps=4](x: *bf16)") is False  # never skips
    fresh_log._after(key="k1", repr="rmsnorm_kernel[num_warps=4](x: *bf16)")
    assert fresh_log.compiled_while_serving == []  # at start-up: expected, debug only
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]

    fresh_log.serving()
    fresh_log._before(key="k2", repr="prefill_attention[num_warps=8](q: *bf16)")
    fresh_log._after(key="k2", repr="prefill_attention[num_warps=8](q: *bf16)")
    (name, seconds), = fresh_log.compiled_while_serving
    assert name.startswith("prefill_attention") and 0 <= seconds < 5
    warning = caplog.records[-1]
    assert warning.levelno == logging.WARNING and "prefill_attention" in warning.getMessage()


def test_hooks_are_installed_once_and_never_over_the_users(monkeypatch):
    knobs = pytest.importorskip("triton").knobs
    monkeypatch.setattr(compile_log, "_installed", False)
    mine = lambda **kw: None  # noqa: E731
    monkeypatch.setattr(knobs.runtime, "jit_cache_hook", mine)
    monkeypatch.setattr(knobs.runtime, "jit_post_compile_hook", None)
    compile_log.watch_compiles()
    assert knobs.runtime.jit_cache_hook is mine and knobs.runtime.jit_post_compile_hook is None
    monkeypatch.setattr(knobs.runtime, "jit_cache_hook", None)
    compile_log.watch_compiles()
    assert knobs.runtime.jit_cache_hook is compile_log._before
    assert knobs.runtime.jit_post_compile_hook is compile_log._after
