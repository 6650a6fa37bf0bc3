"""Triton compilations, timed and named.

A Triton kernel compiles the first time it meets a new specialisation (a constexpr, an integer
argument's divisibility by 16, a dtype). At start-up that is expected; once an engine serves, the
step that compiles stalls every request in it (an 8B FP8 offline run on a fresh H200 had steps of
0.8-1.3 s among ~50 ms ones). `watch_compiles()` installs Triton's compile hooks (unless the user
installed their own) and logs each compilation with its wall time: at debug level while the
engine starts, as a warning naming the kernel and its arguments once `serving()` was called.
"""
from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_started: dict[tuple, float] = {}  # (thread id, kernel key) -> when its compilation began
_installed = False
_serving = False
compiled_while_serving: list[tuple[str, float]] = []  # (kernel and arguments, seconds), for reports


def _key(key) -> tuple:
    return threading.get_ident(), str(key)


def _before(*, key, **_) -> bool:
    with _lock:
        _started[_key(key)] = time.perf_counter()
    return False  # never skips the compilation


def describe(fn, compile: dict) -> str:
    """'kernel(constexprs and arguments specialised to a value; arguments divisible by 16)': what
    tells one specialisation from another (Triton's own repr names no values)."""
    names = fn.jit_function.arg_names
    values = ", ".join(f"{names[k[0]]}={v}" for k, v in compile["constants"].items() if len(k) == 1)
    aligned = [names[k[0]] for k, attrs in compile["configs"][0].items()
               if len(k) == 1 and any(a[0] == "tt.divisibility" for a in attrs)]
    return f"{fn.name}({values}; divisible by 16: {', '.join(aligned) or 'none'})"


def _after(*, key, repr, fn=None, compile=None, **_) -> None:
    with _lock:
        start = _started.pop(_key(key), None)
    seconds = time.perf_counter() - start if start is not None else float("nan")
    try:
        what = describe(fn, compile)
    except Exception:  # noqa: BLE001 - another Triton's hook arguments: its own repr
        what = repr
    if _serving:
        compiled_while_serving.append((what, seconds))
        logger.warning("Triton compiled %s while serving in %.2f s (a step waited for it)", what, seconds)
    else:
        logger.debug("Triton compiled %s in %.2f s", what, seconds)


def watch_compiles() -> None:
    """Install the hooks once per process (none when Triton is missing or the user has hooks)."""
    global _installed
    with _lock:
        if _installed:
            return
        try:
            from triton import knobs
        except ImportError:  # Triton without knobs (< 3.4) or none at all: nothing to watch
            return
        runtime = knobs.runtime
        if runtime.jit_cache_hook is not None or runtime.jit_post_compile_hook is not None:
            return
        runtime.jit_cache_hook, runtime.jit_post_compile_hook = _before, _after
        _installed = True


def serving(on: bool = True) -> None:
    """From now on a compilation is a warning (the engine is ready and serving)."""
    global _serving
    _serving = on
