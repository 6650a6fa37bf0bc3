"""`--extra-llm-api-options FILE` (trtllm-serve's / trtllm-bench's YAML of LLM arguments) on the
real commands: its keys replace the flags', the engine is built with them (the report says so),
and a bad file is an error naming the file and the key before anything loads."""
from __future__ import annotations

import json

import pytest

from tests.bench.conftest import run_tritium
from tritium.bench import dataset as ds
from tritium.entrypoints.cli import build_parser, llm_kwargs

YAML = """\
max_batch_size: 3                # a top-level LLM argument: wins over --max-batch-size
kv_cache_config:                 # the whole KV cache config (its other fields at their defaults)
  max_tokens: 64
  enable_block_reuse: false
scheduler_config:
  capacity_scheduler_policy: GUARANTEED_NO_EVICT
"""


def _args(*argv: str):
    return build_parser().parse_args(["generate", "hi", *argv])


def test_file_keys_replace_the_flags(tmp_path):
    from tritium import KvCacheConfig
    from tritium.entrypoints.extra_options import resolve_llm_kwargs
    from tritium.llmapi import CapacitySchedulerPolicy

    path = tmp_path / "extra.yaml"
    path.write_text(YAML)
    kw = llm_kwargs(_args("--max-batch-size", "64", "--kv-cache-free-gpu-memory-fraction", "0.5",
                          "--extra-llm-api-options", str(path)))
    assert kw["max_batch_size"] == 3 and kw["build_config"].max_batch_size == 64  # LLM: the top level wins
    assert kw["kv_cache_config"] == {"max_tokens": 64, "enable_block_reuse": False}  # replaced, not merged
    assert kw["scheduler_config"] == {"capacity_scheduler_policy": "GUARANTEED_NO_EVICT"}
    # What LLM(**kw) resolves them to: the file's limit, its whole KV cache section, its policy.
    build, kv, scheduling, _ = resolve_llm_kwargs(kw)
    assert build.max_batch_size == 3
    assert kv == KvCacheConfig(max_tokens=64, enable_block_reuse=False)  # 0.5 of the flags is gone
    assert scheduling.capacity_scheduler_policy is CapacitySchedulerPolicy.GUARANTEED_NO_EVICT
    assert llm_kwargs(_args())["build_config"].max_batch_size == 256  # no file: the flags alone


def test_bench_throughput_builds_the_engine_the_file_describes(tmp_path, tiny_model):
    path = tmp_path / "extra.yaml"
    path.write_text(YAML)
    data = tmp_path / "d.jsonl"
    with open(data, "w") as f:
        ds.write_jsonl(ds.token_norm_dist(6, ds.LengthDist("input", 20, 4), ds.LengthDist("output", 8, 2),
                                          vocab_size=512, seed=3), f)
    report_path = tmp_path / "r.json"
    proc = run_tritium("bench", "throughput", "--model", tiny_model, "--dataset", str(data), "--max-batch-size", "64",
                       "--extra_llm_api_options", str(path), "--report-json", str(report_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    engine, steps = report["engine"], report["engine_steps"]
    assert engine["max_batch_size"] == 3 and steps["max_batch_size"] <= 3  # the file's limit, as the engine ran
    assert engine["prefix_caching"] is False and engine["capacity_scheduler_policy"] == "guaranteed_no_evict"
    # The file's cache cap (below the 3 x max_seq_len the flags' cache would hold).
    assert report["resources"]["kv_cache_capacity_tokens"] == 64 < 3 * engine["max_seq_len"]
    assert engine["extra_llm_api_options"]["kv_cache_config"] == {"max_tokens": 64, "enable_block_reuse": False}
    assert report["performance"]["num_requests"] == 6


@pytest.mark.parametrize("content, message", [
    ("max_batch_sizes: 4\n", r"max_batch_sizes"),
    ("kv_cache_config:\n  free_memory: 0.5\n", r"kv_cache_config.*free_memory"),
    ("build_config:\n  max_batch: 4\n", r"build_config.*max_batch"),
    ("- a\n- b\n", r"must be a mapping of LLM argument names"),
    ("model: /elsewhere\n", r"sets 'model'; give it on the command line"),
    ("kv_cache_config: [1\n", r"is not valid YAML"),
])
def test_bad_files_are_named_before_anything_loads(tmp_path, content, message):
    path = tmp_path / "extra.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match="--extra-llm-api-options") as err:
        llm_kwargs(_args("--extra-llm-api-options", str(path)))
    assert err.match(message)
    proc = run_tritium("serve", "--extra-llm-api-options", str(path), "--port", "1", timeout=60)
    assert proc.returncode != 0 and "extra-llm-api-options" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"cannot read .*nope\.yaml"):
        llm_kwargs(_args("--extra-llm-api-options", str(tmp_path / "nope.yaml")))


def test_serve_builds_its_engine_with_the_file(tmp_path, monkeypatch):
    """`tritium serve`'s engine gets the file's arguments (the LLM is built when the server starts)."""
    import tritium.llm.llm as llm_module
    from tritium.entrypoints.serve_cli import server_config

    path = tmp_path / "extra.yaml"
    path.write_text(YAML)
    args = build_parser().parse_args(["serve", "some/model", "--extra-llm-api-options", str(path)])
    config = server_config(args)  # the file is read and checked here, before the server starts
    seen = {}
    monkeypatch.setattr(llm_module, "LLM", lambda **kw: seen.update(kw))
    config.load_llm()
    assert seen["model"] == "some/model" and seen["max_batch_size"] == 3
    assert seen["kv_cache_config"] == {"max_tokens": 64, "enable_block_reuse": False}
