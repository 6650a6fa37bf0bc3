"""`tritium bench throughput`: offline throughput on a dataset (trtllm-bench throughput).

Every request is submitted at the start (or at most --concurrency at a time), EOS is ignored so
each generates exactly its output_tokens, and the report has the throughputs and per-request
latencies (report.py). --warmup requests of random tokens (no prefix shared with the dataset) run
first and are not measured. max_seq_len defaults to the longest request (input + output), as in
trtllm-bench.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from tqdm.auto import tqdm

from tritium.bench.dataset import read_jsonl
from tritium.bench.report import engine_step_summary, performance, request_rows, summarize
from tritium.bench.session import BACKENDS, BenchSession
from tritium.bench.spec import EngineSpec
from tritium.kernels import compile_log

_WARMUP_SEED = 1_000_003
_WARMUP_MAX_OUTPUT = 32


@dataclass(frozen=True)
class ThroughputSettings:
    dataset: str
    backend: str = "tritium"
    num_requests: Optional[int] = None  # the dataset's first N (all if None)
    concurrency: Optional[int] = None  # most requests in flight at once (None: all)
    streaming: bool = False
    warmup: int = 2

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.num_requests is not None and self.num_requests < 1:
            raise ValueError(f"--num-requests must be at least 1, got {self.num_requests}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must not be negative, got {self.warmup}")


def run_throughput(spec: EngineSpec, settings: ThroughputSettings,
                   publish: Optional[Callable[[dict], None]] = None) -> dict[str, Any]:
    """The report; publish(report) runs before the engine shuts down, so that a slow or failing
    teardown never costs the measurement."""
    requests = read_jsonl(settings.dataset, settings.num_requests)  # before the model: a bad file fails fast
    output_lens = [r.output_tokens for r in requests]
    known = all(r.input_ids is not None for r in requests)
    needed = max(len(r.input_ids) + r.output_tokens for r in requests) if known else None
    session = BenchSession(settings.backend, spec, spec.seq_len_for(needed))
    try:
        prompts = session.prompt_ids(requests)
        if settings.warmup:  # the shapes of the first requests, other tokens, at most 32 output tokens
            shapes = [(len(p), min(n, _WARMUP_MAX_OUTPUT)) for p, n in zip(prompts, output_lens)]
            shapes = (shapes * settings.warmup)[:settings.warmup]
            session.run(session.random_prompts([s[0] for s in shapes], _WARMUP_SEED), [s[1] for s in shapes],
                        settings.concurrency, settings.streaming)
        session.backend.take_engine_stats()  # the warm-up's steps are not the run's
        compiles_before = len(compile_log.compiled_while_serving)
        with tqdm(total=len(prompts), desc=f"{settings.backend} throughput", unit="req") as bar:
            records = session.run(prompts, output_lens, settings.concurrency, settings.streaming, bar)
        steps = session.backend.take_engine_stats()
        compiles = compile_log.compiled_while_serving[compiles_before:]  # steps that waited for Triton
        report = session.report_header("throughput", {
            "concurrency": settings.concurrency or "all", "streaming": settings.streaming,
            "warmup_requests": settings.warmup, "timestamps": _timestamp_source(settings)})
        report["dataset"] = {"path": settings.dataset, "num_requests": len(requests),
                             "input_tokens": summarize([len(p) for p in prompts]),
                             "output_tokens": summarize(output_lens)}
        report["performance"] = performance(records)
        report["resources"] = session.resources()
        report["engine_steps"] = engine_step_summary(steps)
        if report["engine_steps"] is not None:
            report["engine_steps"]["triton_compiles"] = len(compiles)
            report["engine_steps"]["triton_compile_s"] = sum(s for _, s in compiles)
        report["requests"] = request_rows(records)
        if publish is not None:
            publish(report)
        return report
    finally:
        session.close()


def _timestamp_source(settings: ThroughputSettings) -> str:
    if settings.backend == "transformers":
        return "per generate step (streamer)"
    return "client, per streamed snapshot" if settings.streaming else "engine output, per step"
