"""Whole-process start-up of `tritium generate`: wall time and peak resident memory, cold and warm.

    python scripts/bench_startup.py [--runs 5] [-- extra tritium generate args]

cold: every run with an empty TRITIUM_CACHE_DIR (what a first run does); warm: every run with the
cache the first cold run left. Each run is a fresh process (`python -m tritium.entrypoints.cli
generate --chat "What is the capital of France?"`); its wall time is measured around the process,
its peak RSS comes from wait4(). Prints min / median / max of each.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

QUESTION = "What is the capital of France?"


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, output) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return wall, usage.ru_maxrss / 1024, out


def summary(name: str, values: list[float], unit: str) -> str:
    return (f"{name:>5}: min {min(values):.2f} / median {statistics.median(values):.2f} / "
            f"max {max(values):.2f} {unit}  (n={len(values)})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("extra", nargs="*", help="more `tritium generate` arguments (after --)")
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "tritium.entrypoints.cli", "generate", "--chat", QUESTION, *args.extra]
    root = tempfile.mkdtemp(prefix="tritium-startup-")
    results = {"cold": ([], []), "warm": ([], [])}
    try:
        warm_dir = os.path.join(root, "warm")
        for i in range(args.runs):
            cold_dir = os.path.join(root, f"cold{i}")
            wall, rss, out = run_once(cmd, dict(os.environ, TRITIUM_CACHE_DIR=cold_dir))
            results["cold"][0].append(wall)
            results["cold"][1].append(rss)
            if i == 0:
                shutil.copytree(cold_dir, warm_dir)
                print(out.strip().splitlines()[-1])
            shutil.rmtree(cold_dir)
        for _ in range(args.runs):
            wall, rss, _ = run_once(cmd, dict(os.environ, TRITIUM_CACHE_DIR=warm_dir))
            results["warm"][0].append(wall)
            results["warm"][1].append(rss)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for kind, (walls, rsss) in results.items():
        print(f"{kind}: {summary('wall', walls, 's')}")
        print(f"{kind}: {summary('rss', rsss, 'MiB')}")


if __name__ == "__main__":
    main()
