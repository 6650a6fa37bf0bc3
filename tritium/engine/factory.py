"""Assembles an EngineCore: source -> model config -> weights -> KV cache plan -> runner + scheduler."""
from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

import torch

from tritium.attention.backend import AttentionBackend
from tritium.attention.torch_backend import TorchAttentionBackend
from tritium.config import BuildConfig, CacheConfig, KvCacheConfig, ModelConfig, SchedulerConfig
from tritium.core.scheduler import Scheduler
from tritium.engine.engine_core import EngineCore
from tritium.loader import load_model, load_tokenizer, model_config_from_source, resolve_model_source
from tritium.loader.source import ModelSource
from tritium.structured_output.backend import GrammarBackend
from tritium.structured_output.manager import StructuredOutputManager
from tritium.worker.cuda_graph import capture_sizes
from tritium.worker.memory_plan import KvCachePlan, describe_memory, plan_kv_cache, profile_activation_bytes
from tritium.worker.model_runner import ModelRunner

logger = logging.getLogger(__name__)


@dataclass
class EngineParts:
    core: EngineCore
    source: ModelSource
    model_config: ModelConfig
    scheduler_config: SchedulerConfig
    kv_plan: KvCachePlan
    tokenizer: Any
    device: torch.device
    grammar_backend: Optional[GrammarBackend] = None  # None without a tokenizer: no guided decoding
    startup_seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # phase -> wall seconds


def resolve_device(device: Optional[str | torch.device]) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available")
    return dev


def make_attention_backend(dev: torch.device) -> AttentionBackend:
    """Triton kernels on a CUDA device (unless TRITIUM_TRITON=0), the torch reference elsewhere."""
    from tritium.kernels import use_triton

    if use_triton(torch.empty(0, device=dev)):
        from tritium.attention.triton_backend import TritonAttentionBackend

        return TritonAttentionBackend()
    return TorchAttentionBackend()


def build_engine(model: str, tokenizer: Optional[str], dtype: str, build_config: BuildConfig,
                 kv_cache_config: KvCacheConfig, load_format: str = "auto",
                 device: Optional[str | torch.device] = None, skip_tokenizer_init: bool = False,
                 enforce_eager: bool = False, runner_options: Optional[dict[str, Any]] = None) -> EngineParts:
    """enforce_eager: no CUDA graphs (every step runs eagerly), for debugging. runner_options:
    extra ModelRunner arguments (batched_logits_processor, allow_overlap)."""
    dev = resolve_device(device)
    args = (model, tokenizer, dtype, build_config, kv_cache_config, load_format, dev, skip_tokenizer_init,
            enforce_eager, runner_options or {})
    if dev.type != "cpu":
        return _build_engine(*args)
    # On CPU, build in a short-lived thread so that the caller's thread starts no OpenMP thread
    # pool of its own: once a second pool (the engine thread's) exists, libgomp counts more
    # threads than cores and throttles its workers' spin-wait, so every parallel op in the engine
    # thread then waits on a futex wake-up (a 2-core decode step took 55 ms instead of 38 ms).
    # The pool dies with the thread.
    with ThreadPoolExecutor(1, thread_name_prefix="tritium-build") as pool:
        return pool.submit(_build_engine, *args).result()


def _build_engine(model: str, tokenizer: Optional[str], dtype: str, build_config: BuildConfig,
                  kv_cache_config: KvCacheConfig, load_format: str, dev: torch.device,
                  skip_tokenizer_init: bool, enforce_eager: bool, runner_options: dict[str, Any]) -> EngineParts:
    clock = _PhaseClock()
    source = resolve_model_source(model, load_format)
    model_config = model_config_from_source(source, dtype=dtype, device=dev)
    # The tokenizer (Python and Rust, one core) loads while the weights load and pack (torch).
    with ThreadPoolExecutor(1, thread_name_prefix="tritium-tokenizer") as pool:
        tok_future = None if skip_tokenizer_init else pool.submit(load_tokenizer, source, tokenizer)
        nn_model = load_model(source, model_config, dev)
        tok = tok_future.result() if tok_future is not None else None
    if tok is not None and not model_config.eos_token_ids and tok.eos_token_id is not None:
        model_config = dataclasses.replace(model_config, eos_token_ids=(tok.eos_token_id,))
    clock.lap("config, tokenizer and weights")  # the tokenizer loads in a thread beside the weights

    sched = SchedulerConfig.from_build(build_config, model_config)
    backend = make_attention_backend(dev)
    use_graphs = dev.type == "cuda" and not enforce_eager and backend.name == "triton"
    activation = graph_reserve = 0
    if dev.type == "cuda":
        activation = profile_activation_bytes(nn_model, model_config, sched, dev, backend)
        if use_graphs:  # the graphs' pool holds one decode step's activations at the largest size,
            top = capture_sizes(sched.max_num_seqs)[-1]  # plus their shared float32 logits buffer
            graph_reserve = (profile_activation_bytes(nn_model, model_config, sched, dev, backend, num_tokens=top)
                             + top * model_config.vocab_size * 4)
    clock.lap("memory profile")
    plan = plan_kv_cache(model_config, sched, kv_cache_config, model_config.dtype, dev, activation + graph_reserve)
    if plan.max_tokens < sched.max_model_len:
        if build_config.max_seq_len is not None:
            raise ValueError(
                f"max_seq_len={build_config.max_seq_len} does not fit in the KV cache ({plan.max_tokens} tokens); "
                "lower max_seq_len or give the cache more memory")
        logger.warning("max_seq_len lowered from %d to the KV cache capacity %d", sched.max_model_len, plan.max_tokens)
        sched = dataclasses.replace(sched, max_model_len=plan.max_tokens)
    logger.info(plan.describe())
    logger.info(describe_memory(nn_model, plan, activation, graph_reserve, sched.max_model_len))

    cache = CacheConfig(block_size=plan.block_size, num_blocks=plan.num_blocks,
                        enable_prefix_caching=kv_cache_config.enable_block_reuse, dtype=model_config.dtype)
    grammar = GrammarBackend(tok, model_config.vocab_size, model_config.eos_token_ids) if tok is not None else None
    runner = ModelRunner(nn_model, model_config, cache, dev, backend, max_num_seqs=sched.max_num_seqs,
                         max_model_len=sched.max_model_len, use_cuda_graphs=use_graphs,
                         structured_output=StructuredOutputManager(grammar) if grammar is not None else None,
                         max_beam_width=sched.max_beam_width, **runner_options)
    if runner.graphs is not None:
        logger.info("CUDA graph pool: %.2f GiB used of %.2f GiB reserved", runner.graphs.pool_bytes / 2**30,
                    graph_reserve / 2**30)
    clock.lap("KV cache and CUDA graphs" if runner.graphs is not None else "KV cache")
    core = EngineCore(Scheduler(sched, cache), runner)
    logger.info("engine ready in %.1f s (%s)", sum(clock.laps.values()),
                ", ".join(f"{k} {v:.1f} s" for k, v in clock.laps.items()))
    return EngineParts(core=core, source=source, model_config=model_config, scheduler_config=sched,
                       kv_plan=plan, tokenizer=tok, device=dev, grammar_backend=grammar,
                       startup_seconds=clock.laps)


class _PhaseClock:
    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[phase] = now - self._last
        self._last = now
