"""`tritium bench serve` against a real `tritium serve` (tiny checkpoint): the load generator's
counts agree with what the server itself counted in /metrics."""
from __future__ import annotations

import json
import re

import httpx

from tritium.entrypoints.cli import main


def _generation_tokens(base_url: str) -> float:
    text = httpx.get(base_url + "/metrics").text
    return float(re.search(r"^tritium_generation_tokens_total\{[^}]*\} (\S+)$", text, re.M).group(1))


def test_bench_serve_reports_what_the_server_did(start_tiny_server, tmp_path, capsys):
    srv = start_tiny_server("--max-batch-size", "4").wait_ready()
    dataset = tmp_path / "requests.jsonl"
    dataset.write_text("".join(json.dumps({"input_ids": [3 + i, 7, 11][: 1 + i % 3], "output_tokens": 5 + i}) + "\n"
                               for i in range(6)))
    before = _generation_tokens(srv.base_url)
    report_path = tmp_path / "report.json"
    code = main(["bench", "serve", "--base-url", srv.base_url, "--dataset", str(dataset), "--warmup", "0",
                 "--request-rate", "50", "--max-concurrency", "3", "--result-json", str(report_path),
                 "--save-detailed"])
    out = capsys.readouterr().out
    assert code == 0 and "Serving Benchmark Result" in out and "Mean TTFT (ms)" in out
    report = json.loads(report_path.read_text())
    assert report["successful_requests"] == 6 and report["failed_requests"] == 0
    assert report["total_output_tokens"] == sum(5 + i for i in range(6)) == _generation_tokens(srv.base_url) - before
    assert report["total_input_tokens"] == sum(1 + i % 3 for i in range(6))
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_latency_ms"):
        assert 0 < report[key]["mean"] <= report[key]["max"]
    assert report["ttft_ms"]["mean"] < report["e2e_latency_ms"]["mean"]
    rows = report["requests"]  # --save-detailed: one a request, in sending order
    assert [(r["input_tokens"], r["output_tokens"], r["error"]) for r in rows] == [
        (1 + i % 3, 5 + i, None) for i in range(6)]
    assert rows[0]["sent_s"] == 0 and all(a["sent_s"] <= b["sent_s"] for a, b in zip(rows, rows[1:]))
    assert max(r["ttft_ms"] for r in rows) == report["ttft_ms"]["max"]
    # >= 0, not > 0: a stream the client fell behind on arrives as one chunk (the server merges
    # snapshots the client has not taken yet), and its tokens after the first took no time apart
    assert all(0 < r["ttft_ms"] <= r["e2e_ms"] and r["tpot_ms"] >= 0 for r in rows)


def test_bench_serve_token_norm_dist_and_bad_input(start_tiny_server, capsys):
    srv = start_tiny_server().wait_ready()
    code = main(["bench", "serve", "--base-url", srv.base_url, "--num-prompts", "4", "--input-mean", "6",
                 "--input-stdev", "2", "--output-mean", "4", "--vocab-size", "256", "--warmup", "1"])
    assert code == 0 and "Successful requests" in capsys.readouterr().out
    assert main(["bench", "serve", "--base-url", srv.base_url, "--dataset", "/no/such.jsonl"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["bench", "serve", "--base-url", srv.base_url, "--save-detailed"]) == 2
    assert "--save-detailed needs --result-json" in capsys.readouterr().err
    # Out-of-vocabulary ids: every request fails with the server's 400, reported, exit 1.
    assert main(["bench", "serve", "--base-url", srv.base_url, "--num-prompts", "2", "--vocab-size", "100000",
                 "--input-mean", "50", "--warmup", "0"]) == 1
    assert "HTTP 400" in capsys.readouterr().out
