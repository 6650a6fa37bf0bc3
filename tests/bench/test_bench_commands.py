"""`tritium bench throughput` and `latency` end to end through the real command, on a tiny random
checkpoint: report fields present and consistent with the dataset, the concurrency limit as the
engine saw it, the transformers baseline on the same requests, and clear errors."""
from __future__ import annotations

import json

import pytest

from tests.bench.conftest import read_jsonl, run_tritium
from tritium.bench import dataset as ds
from tritium.bench.report import STAT_KEYS
from tritium.entrypoints.cli import main

NUM_REQUESTS = 12


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("bench_data") / "data.jsonl"
    with open(path, "w") as f:
        ds.write_jsonl(ds.token_norm_dist(NUM_REQUESTS, ds.LengthDist("input", 24, 8), ds.LengthDist("output", 10, 3),
                                          vocab_size=512, seed=11), f)
    return str(path)


def _bench(tmp_path, *args: str) -> dict:
    report_path = tmp_path / "report.json"
    proc = run_tritium("bench", *args, "--report-json", str(report_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PERFORMANCE" in proc.stdout or "iterations" in proc.stdout  # the readable table
    return json.loads(report_path.read_text())


def _check_stats(st: dict) -> None:
    assert list(st) == list(STAT_KEYS)
    assert st["min"] <= st["p50"] <= st["p90"] <= st["p95"] <= st["p99"] <= st["max"]
    assert st["min"] <= st["mean"] <= st["max"]


def _check_throughput_report(report: dict, dataset: str) -> None:
    rows = read_jsonl(dataset)
    perf, reqs = report["performance"], report["requests"]
    assert report["dataset"]["num_requests"] == perf["num_requests"] == len(reqs) == NUM_REQUESTS
    # Exact output lengths (EOS ignored), in dataset order; totals are the sums over requests.
    assert [r["output_tokens"] for r in reqs] == [r["output_tokens"] for r in rows]
    assert [r["input_tokens"] for r in reqs] == [len(r["input_ids"]) for r in rows]
    assert perf["total_output_tokens"] == sum(r["output_tokens"] for r in reqs)
    assert perf["total_input_tokens"] == sum(r["input_tokens"] for r in reqs)
    wall = perf["wall_time_s"]
    assert perf["output_throughput_tok_s"] == pytest.approx(perf["total_output_tokens"] / wall)
    assert perf["total_token_throughput_tok_s"] == pytest.approx(
        (perf["total_input_tokens"] + perf["total_output_tokens"]) / wall)
    assert perf["request_throughput_req_s"] == pytest.approx(NUM_REQUESTS / wall)
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_latency_ms", "output_speed_per_user_tok_s"):
        _check_stats(perf[key])
    for r in reqs:
        assert 0 < r["ttft_ms"] <= r["e2e_latency_ms"] <= wall * 1e3 * (1 + 1e-9)
        assert r["tpot_ms"] * (r["output_tokens"] - 1) == pytest.approx(r["e2e_latency_ms"] - r["ttft_ms"])
    assert perf["e2e_latency_ms"]["max"] == pytest.approx(max(r["e2e_latency_ms"] for r in reqs))
    res = report["resources"]
    assert res["memory"]["peak_gib"] > 0
    assert 0 < res["startup"]["engine_ready_s"] <= res["startup"]["first_token_s"]
    machine = report["machine"]
    assert machine["device"] == "cpu" and machine["name"] and machine["torch"]


def test_throughput_with_a_concurrency_limit(tmp_path, tiny_model, dataset):
    report = _bench(tmp_path, "throughput", "--model", tiny_model, "--dataset", dataset, "--concurrency", "3",
                    "--max-batch-size", "8")
    _check_throughput_report(report, dataset)
    assert report["engine"]["backend"] == "tritium" and report["settings"]["concurrency"] == 3
    steps, perf = report["engine_steps"], report["performance"]
    # The engine never held more than 3 requests (running or queued), and it was kept at 3.
    assert steps["max_in_flight"] == 3 and steps["max_batch_size"] == 3
    assert steps["triton_compiles"] == 0 and steps["triton_compile_s"] == 0  # the CPU path compiles no kernel
    _check_stats(steps["step_ms"])
    busy_s = steps["step_ms"]["mean"] * steps["num_steps"] / 1e3  # the engine's steps fit in the run's wall time
    assert 0 < busy_s <= report["performance"]["wall_time_s"]
    # Random prompts share no cached prefix: the engine computed every prompt token and sampled every output.
    assert steps["prompt_tokens"] == perf["total_input_tokens"]
    assert steps["generation_tokens"] == perf["total_output_tokens"]
    # max_seq_len defaults to the longest request, and the KV cache holds at least one.
    longest = max(r["input_tokens"] + r["output_tokens"] for r in report["requests"])
    assert report["engine"]["max_seq_len"] == longest
    assert report["resources"]["kv_cache_capacity_tokens"] >= longest
    # The engine's start-up phases (its own log) fit inside the time from process start to ready.
    startup = report["resources"]["startup"]
    assert "config, tokenizer and weights" in startup["engine_phases_s"]
    assert 0 < sum(startup["engine_phases_s"].values()) <= startup["engine_ready_s"]


def test_throughput_streaming_all_at_once(tmp_path, tiny_model, dataset):
    report = _bench(tmp_path, "throughput", "--model", tiny_model, "--load-format", "dummy", "--dataset", dataset,
                    "--streaming", "--warmup", "0")
    _check_throughput_report(report, dataset)
    assert report["settings"]["streaming"] is True and report["engine"]["load_format"] == "dummy"
    assert report["engine_steps"]["max_in_flight"] == NUM_REQUESTS  # all submitted at once


def test_transformers_baseline_on_the_same_requests(tmp_path, tiny_model, dataset):
    report = _bench(tmp_path, "throughput", "--model", tiny_model, "--dataset", dataset, "--backend", "transformers",
                    "--max-batch-size", "5", "--dtype", "float32")
    _check_throughput_report(report, dataset)
    assert report["engine"]["backend"] == "transformers" and report["engine"]["batch_size"] == 5
    assert report["engine"]["dtype"] == "float32" and report["engine_steps"] is None
    # Static batches of 5 in dataset order: a batch's requests share their first token's time.
    ttft = [r["ttft_ms"] for r in report["requests"]]
    assert ttft[0] == ttft[4] < ttft[5] == ttft[9] < ttft[10] == ttft[11]


def test_throughput_with_guaranteed_no_evict(tmp_path, tiny_model, dataset):
    # A KV cache of 4 blocks of 16: about one request at full length, two by their prompts alone
    # (tests/e2e/test_capacity_policy.py shows max_utilization preempting under such pressure).
    report = _bench(tmp_path, "throughput", "--model", tiny_model, "--dataset", dataset, "--warmup", "0",
                    "--scheduler_policy", "guaranteed_no_evict", "--kv-cache-max-tokens", "64",
                    "--disable-prefix-caching")
    _check_throughput_report(report, dataset)
    assert report["engine"]["capacity_scheduler_policy"] == "guaranteed_no_evict"  # as the engine's scheduler has it
    assert report["engine_steps"]["num_preemptions"] == 0


@pytest.mark.parametrize("backend", ["tritium", "transformers"])
def test_latency(tmp_path, tiny_model, backend):
    report = _bench(tmp_path, "latency", "--model", tiny_model, "--backend", backend, "--batch-size", "2",
                    "--input-len", "20", "--output-len", "8", "--iterations", "3", "--warmup", "1")
    lat = report["latency"]
    assert lat["iterations"] == 3 and report["settings"]["batch_size"] == 2
    for key in ("ttft_ms", "tpot_ms", "e2e_latency_ms", "decode_speed_per_user_tok_s", "output_throughput_tok_s"):
        _check_stats(lat[key])
    assert len(lat["per_iteration"]) == 3
    for it in lat["per_iteration"]:  # 2 x 8 tokens an iteration: throughput x latency is that count
        assert 0 < it["ttft_ms"] < it["e2e_latency_ms"]
        assert it["output_throughput_tok_s"] * it["e2e_latency_ms"] / 1e3 == pytest.approx(16)
    assert lat["e2e_latency_ms"]["p50"] == pytest.approx(sorted(it["e2e_latency_ms"] for it in lat["per_iteration"])[1])
    if backend == "tritium":
        steps = report["engine_steps"]
        assert steps["max_in_flight"] == 2 and steps["prompt_tokens"] == 3 * 2 * 20
        assert steps["generation_tokens"] == 3 * 2 * 8


@pytest.mark.parametrize("args,message", [
    (["throughput", "--dataset", "/no/such.jsonl"], "--dataset /no/such.jsonl does not exist"),
    (["throughput", "--model", "no-such-shape", "--load-format", "dummy", "--dataset", "{data}"],
     "neither a path nor a packaged model shape (shapes: llama-3.1-8b"),
    (["throughput", "--model", "llama-3.1-8b", "--dataset", "{data}"], "add --load-format dummy"),
    (["throughput", "--dataset", "{data}", "--concurrency", "0"], "--concurrency must be at least 1"),
    (["latency", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["prepare-dataset", "token-norm-dist", "--num-requests", "4", "--input-mean", "-3", "--output-mean", "4",
      "--vocab-size", "9"], "--input-mean must be at least 1"),
    (["prepare-dataset", "token-norm-dist", "--num-requests", "4", "--input-mean", "10", "--input-stdev", "20",
      "--output-mean", "4", "--vocab-size", "9"], "--input-stdev (20) must not be larger than --input-mean (10)"),
    (["prepare-dataset", "text", "--text-file", "/no/such.txt", "--num-requests", "2", "--input-mean", "4",
      "--output-mean", "4"], "--text-file /no/such.txt does not exist"),
])
def test_bad_arguments_are_clear_errors(capsys, dataset, args, message):
    code = main(["bench"] + [a.replace("{data}", dataset) for a in args])
    assert code == 2 and message in capsys.readouterr().err


def test_a_dataset_beyond_the_model_is_refused_before_running(capsys, tmp_path, tiny_model):
    path = tmp_path / "big_ids.jsonl"
    path.write_text('{"task_id": 7, "input_ids": [3, 600], "output_tokens": 2}\n')
    assert main(["bench", "throughput", "--model", tiny_model, "--dataset", str(path)]) == 2
    assert "request 7 has token id 600, outside this model's vocabulary of 512" in capsys.readouterr().err
    path.write_text('{"task_id": 1, "prompt": "hello", "output_tokens": 2}\n')
    assert main(["bench", "throughput", "--model", tiny_model, "--dataset", str(path)]) == 2
    assert "text prompt but this model has no tokenizer" in capsys.readouterr().err


def test_help_lists_the_trtllm_bench_flags(capsys):
    for command, flags in [
        ("throughput", ("--dataset", "--load-format", "--dtype", "--max-batch-size", "--max-num-tokens",
                        "--max-seq-len", "--kv-cache-free-gpu-memory-fraction", "--concurrency", "--streaming",
                        "--warmup", "--report-json", "--backend", "--num-requests", "--scheduler_policy")),
        ("latency", ("--batch-size", "--input-len", "--output-len", "--iterations", "--warmup", "--backend")),
    ]:
        with pytest.raises(SystemExit) as done:
            main(["bench", command, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert all(flag in out for flag in flags), [f for f in flags if f not in out]
