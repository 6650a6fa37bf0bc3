"""Host time of one engine step at a large decode batch (default 512 requests) on the CPU:
scheduler.schedule(), the runner's execute_model() without the model's own forward / logits
time, and scheduler.update_from_output(). The model is a tiny random checkpoint, so what is timed
is the Python / numpy bookkeeping a GPU engine pays per step whatever the model.

    PYTHONPATH=<tree> python scripts/bench_step_host_time.py [--requests 512] [--steps 30]

Run it against two trees (main and a branch) on a quiet machine to compare.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3, help="runs; the median of each part is reported")
    args = parser.parse_args()

    import torch

    from tests.utils.tiny_models import make_tiny_checkpoint
    from tritium import LLM, BuildConfig, SamplingParams
    from tritium.core.request import Request

    path = make_tiny_checkpoint("llama", tempfile.mkdtemp())
    llm = LLM(path, dtype="float32", build_config=BuildConfig(max_batch_size=args.requests, max_seq_len=128))
    core = llm._engine.core  # the engine thread idles (no requests through it): drive the core directly
    torch.set_num_threads(1)  # this thread's own OpenMP pool would fight the engine thread's (noise)
    scheduler, runner = core.scheduler, core.runner
    model_time = [0.0]
    forward, logits = runner.model.forward, runner.model.compute_logits

    def timed(fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            model_time[0] += time.perf_counter() - t
            return out
        return wrapper

    runner.model.forward, runner.model.compute_logits = timed(forward), timed(logits)
    parts = {"schedule": [], "execute (host)": [], "update": []}
    for rep in range(args.repeats):
        params = SamplingParams(max_tokens=args.steps + 4, temperature=0.0, ignore_eos=True)
        for i in range(args.requests):
            scheduler.add_request(Request(f"{rep}-{i}", [(7 * i + j) % 250 + 3 for j in range(8)], params))
        samples = {k: [] for k in parts}
        for step in range(args.steps + 3):
            t0 = time.perf_counter()
            so = scheduler.schedule()
            t1 = time.perf_counter()
            model_time[0] = 0.0
            out = runner.execute_model(so).result()
            t2 = time.perf_counter()
            scheduler.update_from_output(so, out)
            t3 = time.perf_counter()
            if step >= 2 and len(so.num_scheduled_tokens) == args.requests:  # decode steps of the full batch
                samples["schedule"].append(t1 - t0)
                samples["execute (host)"].append(t2 - t1 - model_time[0])
                samples["update"].append(t3 - t2)
        while scheduler.has_unfinished_requests():
            so = scheduler.schedule()
            scheduler.update_from_output(so, runner.execute_model(so).result())
        for k in parts:
            parts[k].append(statistics.median(samples[k]))
    llm.shutdown()
    print(f"{args.requests} requests, decode step host time (median of {args.repeats} runs of {args.steps} steps):")
    for k, v in parts.items():
        print(f"  {k:15s} {statistics.median(v) * 1e3:7.2f} ms   (runs: {', '.join(f'{x * 1e3:.2f}' for x in v)})")
    print(f"  {'total':15s} {sum(statistics.median(v) for v in parts.values()) * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
