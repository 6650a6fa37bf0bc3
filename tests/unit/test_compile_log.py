"""Triton compilations are timed and, once an engine serves, reported as warnings naming the kernel
(a step that compiles stalls all its requests)."""
import logging
from types import SimpleNamespace

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
    # the hook's arguments as Triton 3.6 passes them: constexprs and alignment by argument index
    fn = SimpleNamespace(name="prefill_attention", jit_function=SimpleNamespace(arg_names=["q", "n", "BLOCK"]))
    compile = {"constants": {(2,): 64}, "configs": [{(0,): [["tt.divisibility", 16]], (1,): [["tt.divisibility", 16]]}]}
    fresh_log._before(key="k2", repr="prefill_attention[num_warps=8](q: ())")
    fresh_log._after(key="k2", repr="prefill_attention[num_warps=8](q: ())", fn=fn, compile=compile)
    (name, seconds), = fresh_log.compiled_while_serving
    assert name == "prefill_attention(BLOCK=64; divisible by 16: q, n)" and 0 <= seconds < 5
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


def test_attention_kernels_do_not_specialise_on_step_metadata():
    """The block table's row stride and the per-request arrays' alignment change from step to step
    (eager mixed steps slice them where the prompts begin): no new compilation for them."""
    pytest.importorskip("triton")
    from tritium.kernels.decode_attention import _decode_stage1
    from tritium.kernels.prefill_attention import _prefill_kernel

    for kernel, pointers in ((_prefill_kernel, {"block_tables_ptr", "query_start_loc_ptr", "seq_lens_ptr"}),
                             (_decode_stage1, {"block_tables_ptr", "seq_lens_ptr"})):
        if hasattr(kernel, "params"):  # compiled: Triton's own per-argument flags
            flags = {p.name: p for p in kernel.params}
            assert flags["stride_bt"].do_not_specialize
            assert all(flags[name].do_not_specialize_on_alignment for name in pointers)
        else:  # the interpreter keeps the decorator's arguments
            assert "stride_bt" in kernel.kwargs["do_not_specialize"]
            assert pointers <= set(kernel.kwargs["do_not_specialize_on_alignment"])
