"""`tritium bench latency`: one fixed batch at a time (trtllm-bench latency, vLLM bench latency).

Each iteration submits --batch-size requests of --input-len random tokens at once and generates
exactly --output-len tokens for each (EOS ignored); the next iteration starts when all have
finished. Every iteration, and every warm-up iteration before them, gets fresh random prompts, so
the prefix cache never serves a measured prompt. Per iteration: TTFT and TPOT (means over the
batch), end-to-end latency (the iteration's wall time), decode speed per user (1 / TPOT) and output
throughput (batch x output tokens / wall time); the report gives their median and spread over
--iterations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from tqdm.auto import tqdm

from tritium.bench.report import RequestRecord, engine_step_summary, summarize
from tritium.bench.session import BACKENDS, BenchSession
from tritium.bench.spec import EngineSpec


@dataclass(frozen=True)
class LatencySettings:
    backend: str = "tritium"
    batch_size: int = 1
    input_len: int = 128
    output_len: int = 128
    iterations: int = 10
    warmup: int = 2
    streaming: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        for name in ("batch_size", "input_len", "output_len", "iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must not be negative, got {self.warmup}")


def _iteration_stats(records: list[RequestRecord]) -> dict[str, float]:
    wall = max(r.token_times[-1] for r in records) - min(r.start_time for r in records)
    tpots = [r.tpot for r in records if r.tpot is not None]
    return {"ttft": float(np.mean([r.ttft for r in records])), "tpot": float(np.mean(tpots)) if tpots else None,
            "e2e": wall, "speed": float(np.mean([r.output_speed for r in records])) if tpots else None,
            "throughput": sum(r.num_output_tokens for r in records) / wall}


def run_latency(spec: EngineSpec, settings: LatencySettings,
                publish: Optional[Callable[[dict], None]] = None) -> dict[str, Any]:
    """The report; publish(report) runs before the engine shuts down (run_throughput's reason)."""
    if settings.batch_size > spec.max_batch_size:
        raise ValueError(f"--batch-size {settings.batch_size} exceeds --max-batch-size {spec.max_batch_size}")
    session = BenchSession(settings.backend, spec, spec.seq_len_for(settings.input_len + settings.output_len))
    try:
        b, outs = settings.batch_size, [settings.output_len] * settings.batch_size
        per_iteration = []
        with tqdm(total=settings.warmup + settings.iterations, desc=f"{settings.backend} latency", unit="it") as bar:
            for i in range(settings.warmup + settings.iterations):
                measured = i >= settings.warmup
                if i == settings.warmup:
                    session.backend.take_engine_stats()  # the warm-up's steps are not the run's
                prompts = session.random_prompts([settings.input_len] * b, seed=(settings.seed, i))
                records = session.run(prompts, outs, concurrency=b, streaming=settings.streaming)
                if measured:
                    per_iteration.append(_iteration_stats(records))
                bar.update(1)
        steps = session.backend.take_engine_stats()
        report = session.report_header("latency", {
            "batch_size": b, "input_len": settings.input_len, "output_len": settings.output_len,
            "iterations": settings.iterations, "warmup_iterations": settings.warmup, "streaming": settings.streaming})

        def over_iterations(key: str, scale: float = 1.0):
            return summarize([it[key] for it in per_iteration], scale)

        report["latency"] = {
            "iterations": settings.iterations,
            "ttft_ms": over_iterations("ttft", 1e3), "tpot_ms": over_iterations("tpot", 1e3),
            "e2e_latency_ms": over_iterations("e2e", 1e3),
            "decode_speed_per_user_tok_s": over_iterations("speed"),
            "output_throughput_tok_s": over_iterations("throughput"),
            "per_iteration": [{"ttft_ms": it["ttft"] * 1e3, "e2e_latency_ms": it["e2e"] * 1e3,
                               "output_throughput_tok_s": it["throughput"]} for it in per_iteration],
        }
        report["resources"] = session.resources()
        report["engine_steps"] = engine_step_summary(steps)
        if publish is not None:
            publish(report)
        return report
    finally:
        session.close()
