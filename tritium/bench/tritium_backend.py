"""The tritium engine under benchmark: requests through LLM.generate_async in one asyncio loop.

Timing without perturbing the engine:
  * offline (default): each request asks for SamplingParams.return_perf_metrics, so the output
    processor stamps every token when the engine thread hands a step's tokens to the front (one
    perf_counter() per step); the final output carries them. No per-step snapshots are built.
  * --streaming: each request is streamed and the benchmark stamps every snapshot as it arrives in
    the asyncio loop: what a streaming client sees, delivery included.
Submission is stamped by the benchmark just before generate_async (front-end work included).
At most `concurrency` requests are submitted and unfinished at once (a semaphore released when a
request's final output arrives); the engine's own per-step stats (LLM.get_stats) are collected
during the run so the report can show what the engine saw.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

from tritium.bench.report import RequestRecord
from tritium.bench.spec import EngineSpec
from tritium.config import BuildConfig, KvCacheConfig, SchedulerConfig
from tritium.sampling_params import SamplingParams

_STATS_POLL_S = 0.5  # the engine keeps 16384 steps; draining this often never loses one


class TritiumBackend:
    name = "tritium"

    def __init__(self, spec: EngineSpec, max_seq_len: Optional[int]):
        from tritium.llm.llm import LLM

        self.spec = spec
        build = BuildConfig(max_batch_size=spec.max_batch_size, max_num_tokens=spec.max_num_tokens,
                            max_seq_len=max_seq_len, enable_chunked_prefill=spec.enable_chunked_prefill)
        kv = KvCacheConfig(enable_block_reuse=spec.enable_prefix_caching,
                           free_gpu_memory_fraction=spec.kv_cache_free_gpu_memory_fraction,
                           max_tokens=spec.kv_cache_max_tokens)
        policy = spec.capacity_scheduler_policy
        scheduling = None if policy is None else SchedulerConfig(capacity_scheduler_policy=policy)
        kwargs = dict(tokenizer=spec.tokenizer, dtype=spec.dtype, build_config=build, kv_cache_config=kv,
                      scheduler_config=scheduling, load_format=spec.load_format, device=spec.device,
                      enforce_eager=spec.enforce_eager, quant_config=spec.quant_config, calib_config=spec.calib_config)
        if spec.extra_llm_api_options:
            from tritium.entrypoints.extra_options import merge_extra_options

            kwargs = merge_extra_options(kwargs, spec.extra_llm_api_options, spec.extra_llm_api_options_path or "")
        self.llm = LLM(spec.model_path, **kwargs)
        self.device = self.llm.device
        self.tokenizer = self.llm.tokenizer
        self.vocab_size = self.llm.model_config.vocab_size
        self.max_seq_len = self.llm.max_seq_len
        self.startup_phases = self.llm.startup_seconds
        self._engine_stats: list = []

    @property
    def kv_cache_capacity(self) -> Optional[int]:
        return self.llm.kv_cache_plan.max_tokens

    def engine_info(self) -> dict[str, Any]:
        mc, sc = self.llm.model_config, self.llm.scheduler_config
        info = {"backend": self.name, "model": self.spec.model_name, "model_path": self.llm.model_path,
                "load_format": self.spec.load_format, "architecture": mc.architecture,
                "dtype": str(mc.dtype).replace("torch.", ""), "max_batch_size": sc.max_num_seqs,
                "max_num_tokens": sc.max_num_batched_tokens, "max_seq_len": sc.max_model_len,
                "prefix_caching": self.llm.kv_cache_config.enable_block_reuse,
                "chunked_prefill": sc.enable_chunked_prefill, "capacity_scheduler_policy": sc.capacity_policy,
                "quantization": self.llm.quant_config.to_dict() if self.llm.quant_config is not None else None,
                "extra_llm_api_options": self.spec.extra_llm_api_options}
        if self.device.type == "cuda":
            info["cuda_graphs"] = not self.spec.enforce_eager
            info["kv_cache_free_gpu_memory_fraction"] = self.llm.kv_cache_config.free_gpu_memory_fraction
        return info

    def take_engine_stats(self) -> list:
        """The engine's per-step stats since the last call."""
        stats = self._engine_stats + self.llm.get_stats()
        self._engine_stats = []
        return stats

    def run(self, prompts: list[list[int]], output_lens: list[int], concurrency: Optional[int],
            streaming: bool, progress) -> list[RequestRecord]:
        return asyncio.run(self._run_all(prompts, output_lens, concurrency, streaming, progress))

    async def _run_all(self, prompts, output_lens, concurrency, streaming, progress) -> list[RequestRecord]:
        limit = asyncio.Semaphore(concurrency or len(prompts))

        async def one(prompt: list[int], max_tokens: int) -> RequestRecord:
            params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True,
                                    return_perf_metrics=not streaming)
            async with limit:
                start = time.perf_counter()
                stream = self.llm.generate_async(prompt, params, streaming=streaming)
                if streaming:
                    token_times: list[float] = []
                    async for out in stream:
                        token_times += [time.perf_counter()] * len(out.outputs[0].token_ids_diff)
                else:
                    out = await stream.aresult()
                    token_times = out.outputs[0].request_perf_metrics.token_times
            progress.update(1)
            return RequestRecord(num_input_tokens=len(prompt), start_time=start, token_times=token_times)

        collector = asyncio.create_task(self._collect_stats())
        try:
            return list(await asyncio.gather(*(one(p, n) for p, n in zip(prompts, output_lens))))
        finally:
            collector.cancel()

    async def _collect_stats(self) -> None:
        while True:
            await asyncio.sleep(_STATS_POLL_S)
            self._engine_stats += self.llm.get_stats()

    def close(self) -> None:
        self.llm.shutdown()
