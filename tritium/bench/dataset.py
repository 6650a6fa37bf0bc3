"""Benchmark datasets: JSON lines, one request each, in trtllm-bench's format.

    {"task_id": 0, "input_ids": [791, 4320, ...], "output_tokens": 128}
    {"task_id": 1, "prompt": "Some text", "output_tokens": 128}    (tokenized by the benchmark)

`output_tokens` is exact: benchmarks ignore EOS. Two generators (`tritium bench prepare-dataset`):

  token-norm-dist  random token ids; input and output lengths drawn from normal distributions,
                   each max(1, ceil(x)) as trtllm-bench's prepare_dataset does; seeded.
  text             windows of real text cut at random token offsets, tokenized with the model's
                   tokenizer (real tokens for the prefix cache and the detokenizer); the record holds
                   both the token ids (exact lengths) and the window's text.

Both draw everything from one numpy Generator seeded with --seed, so a seed reproduces a dataset.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, TextIO

import numpy as np


@dataclass(frozen=True)
class BenchRequest:
    task_id: int
    output_tokens: int
    input_ids: Optional[list[int]] = None  # set, or `prompt` is
    prompt: Optional[str] = None


@dataclass(frozen=True)
class LengthDist:
    """A normal distribution of token counts; validated for the command line's flags."""

    flag: str  # "input" or "output": names the flags in errors
    mean: float
    stdev: float = 0.0

    def __post_init__(self):
        if not self.mean >= 1:
            raise ValueError(f"--{self.flag}-mean must be at least 1 token, got {self.mean:g}")
        if not self.stdev >= 0:
            raise ValueError(f"--{self.flag}-stdev must not be negative, got {self.stdev:g}")
        if self.stdev > self.mean:
            raise ValueError(f"--{self.flag}-stdev ({self.stdev:g}) must not be larger than "
                             f"--{self.flag}-mean ({self.mean:g})")

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        return [max(1, math.ceil(x)) for x in rng.normal(self.mean, self.stdev, size=n)]


def _check_num_requests(num_requests: int) -> None:
    if num_requests < 1:
        raise ValueError(f"--num-requests must be at least 1, got {num_requests}")


def token_norm_dist(num_requests: int, input_dist: LengthDist, output_dist: LengthDist, vocab_size: int,
                    seed: int = 0, exclude_ids: Iterable[int] = ()) -> list[BenchRequest]:
    """Random token ids, uniform over [0, vocab_size) less `exclude_ids` (special tokens)."""
    _check_num_requests(num_requests)
    allowed = np.setdiff1d(np.arange(vocab_size), np.fromiter(exclude_ids, dtype=np.int64))
    if vocab_size < 1 or len(allowed) == 0:
        raise ValueError(f"--vocab-size must leave at least one ordinary token id, got {vocab_size}")
    rng = np.random.default_rng(seed)
    input_lens = input_dist.sample(rng, num_requests)
    output_lens = output_dist.sample(rng, num_requests)
    return [BenchRequest(task_id=i, output_tokens=out, input_ids=allowed[rng.integers(0, len(allowed), n)].tolist())
            for i, (n, out) in enumerate(zip(input_lens, output_lens))]


def text_windows(text_ids: Sequence[int], tokenizer, num_requests: int, input_dist: LengthDist,
                 output_dist: LengthDist, seed: int = 0) -> list[BenchRequest]:
    """Windows of a tokenized text, each starting at a random token offset."""
    _check_num_requests(num_requests)
    rng = np.random.default_rng(seed)
    input_lens = input_dist.sample(rng, num_requests)
    output_lens = output_dist.sample(rng, num_requests)
    if max(input_lens) > len(text_ids):
        raise ValueError(f"the text file has {len(text_ids)} tokens, fewer than the longest prompt drawn "
                         f"({max(input_lens)} tokens): use a longer text or a smaller --input-mean")
    requests = []
    for i, (n, out) in enumerate(zip(input_lens, output_lens)):
        start = int(rng.integers(0, len(text_ids) - n + 1))
        ids = [int(t) for t in text_ids[start:start + n]]
        requests.append(BenchRequest(task_id=i, output_tokens=out, input_ids=ids, prompt=tokenizer.decode(ids)))
    return requests


def read_text_file(path: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--text-file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        raise ValueError(f"--text-file {path} holds no text")
    return text


# ---- JSON lines ---------------------------------------------------------------------------------
def write_jsonl(requests: Iterable[BenchRequest], out: TextIO) -> None:
    for r in requests:
        record = {"task_id": r.task_id}
        if r.prompt is not None:
            record["prompt"] = r.prompt
        if r.input_ids is not None:
            record["input_ids"] = r.input_ids
        record["output_tokens"] = r.output_tokens
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def _parse_record(data, where: str) -> BenchRequest:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: each line must be a JSON object")
    if not _is_count(data.get("output_tokens")):
        raise ValueError(f"{where}: \"output_tokens\" must be a positive integer, got {data.get('output_tokens')!r}")
    ids, prompt = data.get("input_ids"), data.get("prompt")
    if ids is not None:
        if not (isinstance(ids, list) and ids and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                                      for t in ids)):
            raise ValueError(f"{where}: \"input_ids\" must be a non-empty list of token ids (integers >= 0)")
    elif not (isinstance(prompt, str) and prompt):
        raise ValueError(f"{where}: needs \"input_ids\" (token ids) or \"prompt\" (non-empty text)")
    task_id = data.get("task_id", 0)
    return BenchRequest(task_id=task_id if isinstance(task_id, int) else 0, output_tokens=data["output_tokens"],
                        input_ids=ids, prompt=prompt if isinstance(prompt, str) else None)


def read_jsonl(path: str, limit: Optional[int] = None) -> list[BenchRequest]:
    """The dataset's first `limit` requests (all if None); errors name the file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--dataset {path} does not exist")
    requests = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if limit is not None and len(requests) >= limit:
                break
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not JSON ({e})") from None
            requests.append(_parse_record(data, f"{path}:{line_no}"))
    if not requests:
        raise ValueError(f"--dataset {path} holds no requests")
    return requests
