"""Programmatic dependent launch: every kernel of the decode path, compiled for
Hopper without a GPU, waits for the previous kernel before its first global memory access and
(where it has a main loop or loads) lets the next one launch; compiled without it, neither
instruction is there. Off on devices and builds that cannot run it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from tritium.kernels.pdl import launch_options, pdl_enabled

ROOT = Path(__file__).resolve().parents[2]
TRIGGERS_EARLY = {"rmsnorm", "silu_mul", "rope_kv_write", "decode_stage1", "fp8_gemv"}


def test_decode_kernels_wait_before_touching_memory():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-m", "tests.utils.pdl_ptx"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    names = {key.split()[0] for key in facts}
    assert names == TRIGGERS_EARLY | {"decode_stage2", "sum_splits"}
    for name in names:
        on, off = facts[f"{name} pdl=True"], facts[f"{name} pdl=False"]
        assert off["wait"] is None and off["launch"] is None, name
        assert on["memory"] is not None and on["wait"] is not None and on["wait"] < on["memory"], (name, on)
        assert (on["launch"] is not None) == (name in TRIGGERS_EARLY), (name, on)


def test_small_launches_only_by_default_and_only_on_a_cuda_device(monkeypatch):
    from tritium.kernels import pdl

    monkeypatch.setenv("TRITIUM_PDL", "1")
    assert not pdl_enabled(torch.device("cpu"), 1)
    assert launch_options(torch.device("cpu"), 1) == {"USE_PDL": False}  # no launch_pdl: the interpreter rejects it
    monkeypatch.setenv("TRITIUM_PDL", "0")
    assert launch_options(torch.device("cuda", 0), 1) == {"USE_PDL": False}  # no device query when off
    # a Hopper device, without one here, and compiled kernels: the switch and the launch's size decide
    monkeypatch.setattr(pdl, "_device_supports", lambda index: True)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cuda = torch.device("cuda", 0)
    monkeypatch.delenv("TRITIUM_PDL")
    assert launch_options(cuda, 1) == {"USE_PDL": True, "launch_pdl": True}
    assert pdl_enabled(cuda, pdl.PDL_AUTO_MAX_ROWS) and not pdl_enabled(cuda, pdl.PDL_AUTO_MAX_ROWS + 1)
    monkeypatch.setenv("TRITIUM_PDL", "1")
    assert pdl_enabled(cuda, 4096)
    monkeypatch.setenv("TRITIUM_PDL", "0")
    assert not pdl_enabled(cuda, 1)
    monkeypatch.setenv("TRITIUM_PDL", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not pdl_enabled(cuda, 1)  # the interpreter has no launch_pdl
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setattr(pdl, "_device_supports", lambda index: False)  # before Hopper, or an older Triton
    monkeypatch.setenv("TRITIUM_PDL", "1")
    assert not pdl_enabled(cuda, 1)


def test_this_triton_can_launch_with_it():
    """The Triton the project runs (3.6 here and on the H200) has launch_pdl and the intrinsics;
    without them PDL stays off instead of failing every launch."""
    from tritium.kernels import pdl

    assert pdl._triton_supports()
