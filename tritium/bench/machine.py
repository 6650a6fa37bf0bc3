"""Facts a benchmark report records about where it ran, and the clocks it reads.

Times: per-request stamps are time.perf_counter() seconds; startup times are measured from the
process's start as the kernel records it (psutil's create_time, 10 ms resolution on Linux), so
they include the interpreter, imports, model load and KV cache set-up. Without psutil they count
from this module's import (after the interpreter and torch have started), and say so.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import subprocess
import time
from typing import Any, Optional

import torch

# CPU features that decide which kernels run (bf16 dot products, AMX tiles, wide vectors).
_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")

_PERF_TO_EPOCH = time.time() - time.perf_counter()
_IMPORT_TIME = time.time()


def process_start() -> tuple[float, str]:
    """(time.time() at which this process started, what that time is)."""
    try:
        import psutil
    except ImportError:
        return _IMPORT_TIME, "tritium.bench import (psutil is not installed)"
    return psutil.Process().create_time(), "process start (psutil create_time)"


def since_process_start(perf_time: float) -> float:
    """Seconds from the process's start to a time.perf_counter() stamp."""
    return perf_time + _PERF_TO_EPOCH - process_start()[0]


def _cpu_info() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = line.split(":", 1)[1].split()
                if model and flags:
                    break
    except OSError:
        pass
    return model, [f for f in _CPU_FLAGS if f in flags]


def git_commit() -> Optional[str]:
    """The tritium source tree's commit ('+dirty' if tracked files changed), None outside a git checkout."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.exists(os.path.join(root, ".git")):
        return None
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _package_version(name: str) -> Optional[str]:
    """An installed package's version from its metadata, without importing it (importing
    transformers late in a loaded GPU process took minutes on an H200 host)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(device: torch.device) -> dict[str, Any]:
    from tritium import __version__

    info: dict[str, Any] = {"device": device.type}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                    num_gpus=torch.cuda.device_count(), cuda=torch.version.cuda)
    else:
        name, flags = _cpu_info()
        info.update(name=name, cpu_flags=flags, logical_cores=os.cpu_count(), torch_threads=torch.get_num_threads())
    info.update(python=platform.python_version(), torch=torch.__version__,
                transformers=_package_version("transformers"), tritium=__version__, commit=git_commit())
    return info


def peak_memory(device: torch.device) -> dict[str, Any]:
    """GPU: the torch allocator's peak (weights, KV cache, activations); CPU: the process's peak RSS."""
    if device.type == "cuda":
        return {"peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
                "measure": "torch.cuda.max_memory_allocated"}
    return {"peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "measure": "peak RSS"}
