"""The dataset generators and reader: length statistics against numpy's, exact counts, seeds,
vocabulary bounds, real-text windows checked with the tokenizer, and clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.bench.conftest import read_jsonl, run_tritium
from tritium.bench import dataset as ds


def _lengths(requests):
    return (np.array([len(r.input_ids) for r in requests]), np.array([r.output_tokens for r in requests]))


def test_token_norm_dist_lengths_follow_the_asked_distribution():
    requests = ds.token_norm_dist(4000, ds.LengthDist("input", 100, 20), ds.LengthDist("output", 50, 10),
                                  vocab_size=1000, seed=3)
    assert len(requests) == 4000 and [r.task_id for r in requests] == list(range(4000))
    inputs, outputs = _lengths(requests)
    # max(1, ceil(x)) of N(mean, stdev): mean + ~0.5, same stdev; standard errors 0.32 and 0.16.
    assert abs(inputs.mean() - 100.5) < 1.5 and abs(inputs.std() - 20) < 1.0
    assert abs(outputs.mean() - 50.5) < 0.8 and abs(outputs.std() - 10) < 0.5
    assert inputs.min() >= 1 and outputs.min() >= 1


def test_zero_stdev_gives_exact_lengths():
    requests = ds.token_norm_dist(50, ds.LengthDist("input", 128), ds.LengthDist("output", 7), vocab_size=100)
    assert {len(r.input_ids) for r in requests} == {128} and {r.output_tokens for r in requests} == {7}


def test_seed_reproduces_and_another_seed_differs():
    args = (20, ds.LengthDist("input", 30, 5), ds.LengthDist("output", 10, 2), 500)
    assert ds.token_norm_dist(*args, seed=7) == ds.token_norm_dist(*args, seed=7)
    assert ds.token_norm_dist(*args, seed=7) != ds.token_norm_dist(*args, seed=8)


def test_token_ids_stay_in_the_vocabulary_and_skip_excluded_ids():
    requests = ds.token_norm_dist(200, ds.LengthDist("input", 50), ds.LengthDist("output", 1), vocab_size=6,
                                  seed=1, exclude_ids=[0, 2])
    ids = np.concatenate([r.input_ids for r in requests])
    counts = np.bincount(ids, minlength=6)
    assert counts[0] == counts[2] == 0 and ids.max() < 6
    assert np.all(np.abs(counts[[1, 3, 4, 5]] / len(ids) - 0.25) < 0.02)  # uniform over the allowed ids


@pytest.mark.parametrize("make,message", [
    (lambda: ds.LengthDist("input", -5), "--input-mean must be at least 1"),
    (lambda: ds.LengthDist("output", 0), "--output-mean must be at least 1"),
    (lambda: ds.LengthDist("input", 10, -1), "--input-stdev must not be negative"),
    (lambda: ds.LengthDist("output", 10, 11), "--output-stdev (11) must not be larger than --output-mean (10)"),
    (lambda: ds.token_norm_dist(0, ds.LengthDist("input", 5), ds.LengthDist("output", 5), 10), "--num-requests"),
    (lambda: ds.token_norm_dist(1, ds.LengthDist("input", 5), ds.LengthDist("output", 5), 0), "--vocab-size"),
])
def test_bad_generator_arguments_are_clear_errors(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert message in str(err.value)


def test_text_windows_are_real_token_windows(corpus_text, corpus_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(corpus_tokenizer)
    text_ids = tok(corpus_text, add_special_tokens=False)["input_ids"]
    requests = ds.text_windows(text_ids, tok, 30, ds.LengthDist("input", 40, 8), ds.LengthDist("output", 16), seed=2)
    joined = " " + " ".join(map(str, text_ids)) + " "
    for r in requests:
        assert " " + " ".join(map(str, r.input_ids)) + " " in joined  # a contiguous slice of the text's tokens
        assert r.prompt == tok.decode(r.input_ids) and r.prompt in corpus_text
        assert r.output_tokens == 16
    with pytest.raises(ValueError, match="fewer than the longest prompt"):
        ds.text_windows(text_ids[:10], tok, 3, ds.LengthDist("input", 40), ds.LengthDist("output", 4))


def test_read_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    cases = [
        ('{"task_id": 0, "input_ids": [1, 2]}', "d.jsonl:1: \"output_tokens\" must be a positive integer"),
        ('{"task_id": 0, "output_tokens": 3}', "d.jsonl:1: needs \"input_ids\""),
        ('{"input_ids": [1, -2], "output_tokens": 3}', "d.jsonl:1: \"input_ids\" must be a non-empty list"),
        ('{"prompt": "hi", "output_tokens": 2}\nnot json', "d.jsonl:2: not JSON"),
        ("\n", "holds no requests"),
    ]
    for content, message in cases:
        path.write_text(content)
        with pytest.raises(ValueError) as err:
            ds.read_jsonl(str(path))
        assert message in str(err.value)
    with pytest.raises(FileNotFoundError, match="--dataset .* does not exist"):
        ds.read_jsonl(str(tmp_path / "missing.jsonl"))


def test_prepare_dataset_command_writes_trtllm_records(tmp_path, corpus_text, corpus_tokenizer):
    """Both generators through the real command: trtllm-bench's field names, the asked counts."""
    out = tmp_path / "norm.jsonl"
    proc = run_tritium("bench", "prepare-dataset", "token-norm-dist", "--num-requests", "12", "--input-mean", "20",
                       "--input-stdev", "4", "--output-mean", "6", "--tokenizer", corpus_tokenizer, "--seed", "5",
                       "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = read_jsonl(out)
    assert [r["task_id"] for r in rows] == list(range(12))
    assert all(set(r) == {"task_id", "input_ids", "output_tokens"} for r in rows)
    ids = [t for r in rows for t in r["input_ids"]]
    assert min(ids) >= 2 and max(ids) < 400  # the tokenizer's 400 ids less <s>=0 and </s>=1
    expected = ds.token_norm_dist(12, ds.LengthDist("input", 20, 4), ds.LengthDist("output", 6), 400, seed=5,
                                  exclude_ids=[0, 1])
    assert [r["input_ids"] for r in rows] == [r.input_ids for r in expected]  # the seed reproduces it

    text_file = tmp_path / "corpus.txt"
    text_file.write_text(corpus_text)
    proc = run_tritium("bench", "prepare-dataset", "text", "--text-file", str(text_file), "--num-requests", "5",
                       "--input-mean", "24", "--output-mean", "8", "--tokenizer", corpus_tokenizer)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 5 and all(len(r["input_ids"]) == 24 and r["output_tokens"] == 8 for r in rows)
    assert all(r["prompt"] in corpus_text for r in rows)
