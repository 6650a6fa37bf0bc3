"""Per-request timings -> statistics -> the report: a readable table and the same facts as JSON.

Definitions (trtllm-bench's and vLLM's):
  TTFT   first token time - submission time
  E2E    last token time - submission time
  TPOT   (last token time - first token time) / (output tokens - 1), per request
  ITL    the gaps between consecutive tokens of a request, all requests pooled
  per-user output speed  1 / TPOT, per request
  wall time   last token of any request - first submission; throughputs divide by it
Statistics: min, mean, p50, p90, p95, p99, max (numpy's linear-interpolation percentiles).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

STAT_KEYS = ("min", "mean", "p50", "p90", "p95", "p99", "max")


@dataclass
class RequestRecord:
    num_input_tokens: int
    start_time: float  # perf_counter when submitted
    token_times: list[float]  # perf_counter of each output token

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_times)

    @property
    def ttft(self) -> float:
        return self.token_times[0] - self.start_time

    @property
    def e2e(self) -> float:
        return self.token_times[-1] - self.start_time

    @property
    def tpot(self) -> Optional[float]:
        n = self.num_output_tokens
        return (self.token_times[-1] - self.token_times[0]) / (n - 1) if n > 1 else None

    @property
    def output_speed(self) -> Optional[float]:
        tpot = self.tpot
        return 1.0 / tpot if tpot else None


def summarize(values: Sequence[float], scale: float = 1.0) -> Optional[dict[str, float]]:
    """min/mean/percentiles/max of `values` times `scale`; None when there are none."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64) * scale
    if arr.size == 0:
        return None
    p50, p90, p95, p99 = np.percentile(arr, [50, 90, 95, 99])
    return {"min": float(arr.min()), "mean": float(arr.mean()), "p50": float(p50), "p90": float(p90),
            "p95": float(p95), "p99": float(p99), "max": float(arr.max())}


def performance(records: list[RequestRecord]) -> dict[str, Any]:
    if not records or any(r.num_output_tokens == 0 for r in records):
        raise RuntimeError("a request finished without output tokens; nothing to measure")
    wall = max(r.token_times[-1] for r in records) - min(r.start_time for r in records)
    total_in = sum(r.num_input_tokens for r in records)
    total_out = sum(r.num_output_tokens for r in records)
    itls = np.concatenate([np.diff(r.token_times) for r in records])
    return {
        "num_requests": len(records), "wall_time_s": wall,
        "total_input_tokens": total_in, "total_output_tokens": total_out,
        "request_throughput_req_s": len(records) / wall,
        "output_throughput_tok_s": total_out / wall,
        "total_token_throughput_tok_s": (total_in + total_out) / wall,
        "output_speed_per_user_tok_s": summarize([r.output_speed for r in records]),
        "ttft_ms": summarize([r.ttft for r in records], 1e3),
        "tpot_ms": summarize([r.tpot for r in records], 1e3),
        "itl_ms": summarize(itls, 1e3),
        "e2e_latency_ms": summarize([r.e2e for r in records], 1e3),
    }


def request_rows(records: list[RequestRecord]) -> list[dict[str, Any]]:
    """One entry per request, in submission order, for the JSON report."""
    return [{"input_tokens": r.num_input_tokens, "output_tokens": r.num_output_tokens,
             "ttft_ms": r.ttft * 1e3, "e2e_latency_ms": r.e2e * 1e3,
             "tpot_ms": r.tpot * 1e3 if r.tpot is not None else None} for r in records]


def engine_step_summary(stats: list) -> Optional[dict[str, Any]]:
    """The engine's own view of the run, from its per-step IterationStats."""
    if not stats:
        return None
    return {
        "num_steps": len(stats),
        "max_in_flight": max(s.num_in_flight for s in stats),
        "max_batch_size": max(s.num_scheduled_requests for s in stats),
        "mean_batch_size": float(np.mean([s.num_scheduled_requests for s in stats])),
        "step_ms": summarize([s.step_time_s for s in stats], 1e3),
        "prompt_tokens": sum(s.num_prompt_tokens for s in stats),
        "generation_tokens": sum(s.num_generation_tokens for s in stats),
        "max_kv_cache_usage": max(s.kv_cache_usage for s in stats),
        "num_preemptions": sum(s.num_preemptions for s in stats),
    }


# ---- the readable table -------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.1f}"
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v)) or "-"
    return "-" if v is None else str(v)


def _section(title: str, rows: list[tuple[str, Any]]) -> list[str]:
    lines = ["", f"== {title} " + "=" * max(0, 64 - len(title))]
    lines += [f"{name:<34} {_fmt(value)}" for name, value in rows if value is not None]
    return lines


def _stats_table(title: str, rows: list[tuple[str, Optional[dict]]]) -> list[str]:
    rows = [(name, st) for name, st in rows if st]
    if not rows:
        return []
    lines = ["", f"-- {title}", f"{'':<24}" + "".join(f"{k:>10}" for k in STAT_KEYS)]
    for name, st in rows:
        lines.append(f"{name:<24}" + "".join(f"{st[k]:>10.2f}" for k in STAT_KEYS))
    return lines


def format_report(report: dict[str, Any]) -> str:
    """The report dict as the table printed to stdout."""
    engine, machine = report["engine"], report["machine"]
    lines = [f"tritium bench {report['benchmark']}"]
    lines += _section("ENGINE", [(k.replace("_", " "), v) for k, v in engine.items()])
    lines += _section("MACHINE", [(k.replace("_", " "), v) for k, v in machine.items()])
    if "dataset" in report:
        ds = report["dataset"]
        lines += _section("DATASET", [("path", ds.get("path")), ("requests", ds["num_requests"]),
                                      ("input tokens mean (min-max)", _range(ds["input_tokens"])),
                                      ("output tokens mean (min-max)", _range(ds["output_tokens"]))])
    lines += _section("SETTINGS", [(k.replace("_", " "), v) for k, v in report["settings"].items()])
    if "performance" in report:
        lines += _performance_lines(report["performance"])
    if "latency" in report:
        lat = report["latency"]
        lines += _stats_table(f"over {lat['iterations']} iterations", [
            ("TTFT (ms)", lat["ttft_ms"]), ("TPOT (ms)", lat["tpot_ms"]),
            ("E2E latency (ms)", lat["e2e_latency_ms"]),
            ("decode tok/s per user", lat["decode_speed_per_user_tok_s"]),
            ("output tok/s total", lat["output_throughput_tok_s"])])
    resources = report["resources"]
    lines += _section("RESOURCES", [
        ("KV cache capacity (tokens)", resources.get("kv_cache_capacity_tokens")),
        (f"peak memory (GiB, {resources['memory']['measure']})", resources["memory"]["peak_gib"]),
        ("startup: engine ready (s)", resources["startup"]["engine_ready_s"]),
        ("startup: first token (s)", resources["startup"]["first_token_s"]),
        *((f"startup phase: {phase} (s)", seconds)
          for phase, seconds in resources["startup"].get("engine_phases_s", {}).items())])
    steps = report.get("engine_steps")
    if steps:
        lines += _section("ENGINE STEPS (measured run)", [(k.replace("_", " "), v) for k, v in steps.items()
                                                           if k != "step_ms"])
        lines += _stats_table("engine steps", [("step time (ms)", steps["step_ms"])])
    return "\n".join(lines)


def _range(st: dict) -> str:
    return f"{st['mean']:.1f} ({st['min']:.0f}-{st['max']:.0f})"


def _performance_lines(perf: dict) -> list[str]:
    lines = _section("PERFORMANCE", [
        ("requests", perf["num_requests"]), ("wall time (s)", perf["wall_time_s"]),
        ("input / output tokens", f"{perf['total_input_tokens']} / {perf['total_output_tokens']}"),
        ("request throughput (req/s)", perf["request_throughput_req_s"]),
        ("output token throughput (tok/s)", perf["output_throughput_tok_s"]),
        ("total token throughput (tok/s)", perf["total_token_throughput_tok_s"]),
        ("per-user output speed (tok/s)", (perf["output_speed_per_user_tok_s"] or {}).get("mean"))])
    return lines + _stats_table("per request", [
        ("TTFT (ms)", perf["ttft_ms"]), ("TPOT (ms)", perf["tpot_ms"]), ("ITL (ms)", perf["itl_ms"]),
        ("E2E latency (ms)", perf["e2e_latency_ms"]), ("output tok/s per user", perf["output_speed_per_user_tok_s"])])


def write_json(report: dict[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
