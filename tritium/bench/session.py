"""BenchSession: one backend built, timed from the process start, and run; the report's common parts."""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np

from tritium.bench.dataset import BenchRequest
from tritium.bench.machine import machine_info, peak_memory, process_start, since_process_start
from tritium.bench.report import RequestRecord
from tritium.bench.spec import EngineSpec

BACKENDS = ("tritium", "transformers")


class BenchSession:
    def __init__(self, backend: str, spec: EngineSpec, max_seq_len: Optional[int]):
        if backend == "tritium":
            from tritium.bench.tritium_backend import TritiumBackend

            self.backend = TritiumBackend(spec, max_seq_len)
        elif backend == "transformers":
            from tritium.bench.hf_backend import TransformersBackend

            self.backend = TransformersBackend(spec)
        else:
            raise ValueError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}")
        self.engine_ready_s = since_process_start(time.perf_counter())
        self.first_token_s: Optional[float] = None
        self.machine = machine_info(self.backend.device)  # now, before the engine is loaded with work

    # ---- requests ---------------------------------------------------------------------------
    def prompt_ids(self, requests: list[BenchRequest]) -> list[list[int]]:
        """Each request's token ids (text prompts tokenized now, untimed), checked against the
        vocabulary and max_seq_len before anything runs."""
        tokenizer, vocab, max_len = self.backend.tokenizer, self.backend.vocab_size, self.backend.max_seq_len
        prompts = []
        for r in requests:
            if r.input_ids is not None:
                ids = r.input_ids
            elif tokenizer is None:
                raise ValueError(f"request {r.task_id} has a text prompt but this model has no tokenizer: "
                                 f"prepare the dataset with token ids (token-norm-dist)")
            else:
                ids = tokenizer.encode(r.prompt)
            if max(ids) >= vocab:
                raise ValueError(f"request {r.task_id} has token id {max(ids)}, outside this model's vocabulary "
                                 f"of {vocab}: prepare the dataset with --vocab-size {vocab} or the model's tokenizer")
            if len(ids) + r.output_tokens > max_len:
                raise ValueError(f"request {r.task_id} needs {len(ids)} + {r.output_tokens} tokens, more than "
                                 f"max_seq_len {max_len}: raise --max-seq-len")
            prompts.append(ids)
        return prompts

    def random_prompts(self, lengths: list[int], seed) -> list[list[int]]:
        """Prompts of random token ids (warm-up, latency); a fresh seed shares no prefix block with
        other prompts, so the prefix cache does not shorten the measured work."""
        rng = np.random.default_rng(seed)
        return [rng.integers(0, self.backend.vocab_size, n).tolist() for n in lengths]

    def run(self, prompts: list[list[int]], output_lens: list[int], concurrency: Optional[int] = None,
            streaming: bool = False, progress=None) -> list[RequestRecord]:
        from tqdm.auto import tqdm

        bar = progress or tqdm(total=len(prompts), disable=True)
        records = self.backend.run(prompts, output_lens, concurrency, streaming, bar)
        if self.first_token_s is None:
            self.first_token_s = since_process_start(min(r.token_times[0] for r in records))
        return records

    # ---- report -----------------------------------------------------------------------------
    def report_header(self, benchmark: str, settings: dict[str, Any]) -> dict[str, Any]:
        return {"benchmark": benchmark, "engine": self.backend.engine_info(),
                "machine": self.machine, "settings": settings}

    def resources(self) -> dict[str, Any]:
        return {"kv_cache_capacity_tokens": self.backend.kv_cache_capacity,
                "memory": peak_memory(self.backend.device),
                "startup": {"engine_ready_s": self.engine_ready_s, "first_token_s": self.first_token_s,
                            "from": process_start()[1], "engine_phases_s": dict(self.backend.startup_phases)}}

    def close(self) -> None:
        self.backend.close()
