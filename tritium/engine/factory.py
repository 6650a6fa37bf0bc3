"""Assembles an EngineCore: source -> model config -> weights -> KV cache plan -> runner + scheduler."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

import torch

from tritium.attention.backend import AttentionBackend
from tritium.attention.torch_backend import TorchAttentionBackend
from tritium.config import (BuildConfig, CacheConfig, CudaGraphConfig, KvCacheConfig, ModelConfig,
                            ResolvedSchedulerConfig, SchedulerConfig)
from tritium.core.scheduler import Scheduler
from tritium.engine.engine_core import EngineCore
from tritium.kernels import compile_log
from tritium.loader import load_model, load_tokenizer, model_config_from_source, resolve_model_source
from tritium.loader.source import ModelSource
from tritium.quantization import CalibConfig, ModelQuantization, QuantConfig
from tritium.quantization.config import check_device_support
from tritium.structured_output.backend import GrammarBackend
from tritium.structured_output.manager import StructuredOutputManager
from tritium.worker.cuda_graph import decode_graph_sizes
from tritium.worker.prefill_graph import MAX_REQS as PREFILL_GRAPH_MAX_REQS, prefill_graph_sizes
from tritium.worker.memory_plan import (KvCachePlan, describe_memory, memory_plan_summary, plan_kv_cache,
                                       profile_activation_bytes, profile_key, saved_profile, weights_bytes)
from tritium.worker.model_runner import ModelRunner

logger = logging.getLogger(__name__)


@dataclass
class EngineParts:
    core: EngineCore
    source: ModelSource
    model_config: ModelConfig
    scheduler_config: ResolvedSchedulerConfig
    kv_plan: KvCachePlan
    tokenizer: Any
    device: torch.device
    grammar_backend: Optional[GrammarBackend] = None  # None without a tokenizer: no guided decoding
    quant_config: Optional[QuantConfig] = None  # what the weights / KV cache were quantized with
    model: Any = None  # the nn.Module (LLM.save writes its parameters)
    memory_plan: dict = dataclasses.field(default_factory=dict)  # memory_plan.memory_plan_summary()
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
                 enforce_eager: bool = False, runner_options: Optional[dict[str, Any]] = None,
                 quant_config: Optional[QuantConfig] = None, calib_config: Optional[CalibConfig] = None,
                 scheduler_config: Optional[SchedulerConfig] = None,
                 cuda_graph_config: Optional[CudaGraphConfig] = None) -> EngineParts:
    """scheduler_config: the user's scheduling policies (None: the engine's default).
    cuda_graph_config: the decode graphs' sizes and padding (None: tritium's).
    enforce_eager: no CUDA graphs (every step runs eagerly), for debugging. runner_options:
    extra ModelRunner arguments (batched_logits_processor, allow_overlap). quant_config: quantize
    the weights / KV cache at load (calibrating with calib_config when needed); a saved engine
    brings its own."""
    dev = resolve_device(device)
    args = (model, tokenizer, dtype, build_config, kv_cache_config, load_format, dev, skip_tokenizer_init,
            enforce_eager, runner_options or {}, quant_config, calib_config, scheduler_config, cuda_graph_config)
    if dev.type != "cpu":
        return _build_engine(*args)
    # On CPU, build in a short-lived thread so that the caller's thread starts no OpenMP thread
    # pool of its own: once a second pool (the engine thread's) exists, libgomp counts more
    # threads than cores and throttles its workers' spin-wait, so every parallel op in the engine
    # thread then waits on a futex wake-up (a 2-core decode step took 55 ms instead of 38 ms).
    # The pool dies with the thread.
    with ThreadPoolExecutor(1, thread_name_prefix="tritium-build") as pool:
        return pool.submit(_build_engine, *args).result()


@contextlib.contextmanager
def _engine_files_checked_meanwhile(source: ModelSource):
    """A saved engine's files are read through for their CRC32s in a thread while the block (its
    weights loading) runs, instead of before it: a damaged file's EngineFormatError is raised at
    the end, in place of whatever the block raised from reading it."""
    if source.format != "engine":
        yield
        return
    from tritium.loader.saved_engine import verify_engine_files

    with ThreadPoolExecutor(1, thread_name_prefix="tritium-check") as pool:
        check = pool.submit(verify_engine_files, source.engine)
        try:
            yield
        except Exception as e:
            damaged = check.exception()
            if damaged is not None:
                raise damaged from e
            raise
        check.result()


def _build_engine(model: str, tokenizer: Optional[str], dtype: str, build_config: BuildConfig,
                  kv_cache_config: KvCacheConfig, load_format: str, dev: torch.device,
                  skip_tokenizer_init: bool, enforce_eager: bool, runner_options: dict[str, Any],
                  quant_config: Optional[QuantConfig], calib_config: Optional[CalibConfig],
                  scheduler_config: Optional[SchedulerConfig],
                  cuda_graph_config: Optional[CudaGraphConfig]) -> EngineParts:
    clock = _PhaseClock()
    if dev.type == "cuda":  # Triton compilations logged; once the engine is ready, as warnings
        compile_log.watch_compiles()
        compile_log.serving(False)
    source = resolve_model_source(model, load_format, verify=False)
    with _engine_files_checked_meanwhile(source):
        quant = resolve_quantization(source, quant_config, dev)
        if source.format == "engine":
            dtype = engine_dtype(source, dtype)
            from tritium.kernels.tile_choices import import_choices

            if import_choices(source.engine.config.get("kernel_tiles"), dev):
                logger.info("weight-streaming GEMM tiles: the saved engine's choices (no timing)")
        model_config = model_config_from_source(source, dtype=dtype, device=dev)
        # The tokenizer (Python and Rust, one core) loads while the weights load and pack (torch).
        with ThreadPoolExecutor(1, thread_name_prefix="tritium-tokenizer") as pool:
            tok_future = None if skip_tokenizer_init else pool.submit(load_tokenizer, source, tokenizer)

            def samples():  # calibration text, tokenized once the tokenizer is there
                from tritium.quantization.calibration import calibration_samples

                tok = tok_future.result() if tok_future is not None else None
                return calibration_samples(tok, calib_config or CalibConfig(), model_config.vocab_size)

            nn_model = load_model(source, model_config, dev, quant, samples)
            tok = tok_future.result() if tok_future is not None else None
    if tok is not None and not model_config.eos_token_ids and tok.eos_token_id is not None:
        model_config = dataclasses.replace(model_config, eos_token_ids=(tok.eos_token_id,))
    clock.lap("config, tokenizer and weights")  # the tokenizer loads in a thread beside the weights

    sched = ResolvedSchedulerConfig.from_build(build_config, model_config, scheduler_config)
    backend = make_attention_backend(dev)
    use_graphs = dev.type == "cuda" and not enforce_eager and backend.name == "triton"
    graph_sizes = decode_graph_sizes(sched.max_num_seqs, cuda_graph_config)  # (sizes, padding), checked anywhere
    prefill_sizes = prefill_graph_sizes(sched.max_num_batched_tokens, sched.max_model_len) if use_graphs else []
    activation = graph_reserve = 0
    key = None
    if dev.type == "cuda":
        top = graph_sizes[0][-1]
        key = profile_key(dev, sched, top, prefill_sizes, use_graphs)
        saved = saved_profile(source.engine.config.get("memory_plan"), key) if source.format == "engine" else None
        if saved is not None:
            activation, graph_reserve = saved
            logger.info("memory profile: the saved engine's (same GPU, torch, limits and graphs)")
        else:
            activation = profile_activation_bytes(nn_model, model_config, sched, dev, backend)
        if use_graphs and saved is None:  # the graphs' pool holds one step's activations at the largest
            # graph (decode rows or prefill tokens), plus the float32 logits buffers of both kinds
            tokens = max([top] + prefill_sizes)
            graph_reserve = (profile_activation_bytes(nn_model, model_config, sched, dev, backend, num_tokens=tokens)
                             + (top + (PREFILL_GRAPH_MAX_REQS if prefill_sizes else 0)) * model_config.vocab_size * 4)
    clock.lap("memory profile")
    kv_dtype = (quant.kv_cache_dtype if quant is not None else None) or model_config.dtype
    plan = plan_kv_cache(model_config, sched, kv_cache_config, kv_dtype, dev, activation + graph_reserve)
    if plan.max_tokens < sched.max_model_len:
        if build_config.max_seq_len is not None:
            raise ValueError(
                f"max_seq_len={build_config.max_seq_len} does not fit in the KV cache ({plan.max_tokens} tokens); "
                "lower max_seq_len or give the cache more memory")
        logger.warning("max_seq_len lowered from %d to the KV cache capacity %d", sched.max_model_len, plan.max_tokens)
        sched = dataclasses.replace(sched, max_model_len=plan.max_tokens)
    logger.info(plan.describe())
    memory = memory_plan_summary(weights_bytes(nn_model), plan, activation, graph_reserve, sched.max_model_len, key)
    logger.info(describe_memory(memory))

    cache = CacheConfig(block_size=plan.block_size, num_blocks=plan.num_blocks,
                        enable_prefix_caching=kv_cache_config.enable_block_reuse, dtype=kv_dtype)
    grammar = GrammarBackend.for_model(tok, model_config)
    runner = ModelRunner(nn_model, model_config, cache, dev, backend, max_num_seqs=sched.max_num_seqs,
                         max_model_len=sched.max_model_len, use_cuda_graphs=use_graphs,
                         structured_output=StructuredOutputManager(grammar) if grammar is not None else None,
                         max_beam_width=sched.max_beam_width, cuda_graph_sizes=graph_sizes,
                         prefill_graph_sizes=prefill_sizes, **runner_options)
    if runner.graphs is not None:
        logger.info("CUDA graph pool: %.2f GiB used of %.2f GiB reserved", runner.graph_pool_bytes / 2**30,
                    graph_reserve / 2**30)
    clock.lap("KV cache and CUDA graphs" if runner.graphs is not None else "KV cache")
    core = EngineCore(Scheduler(sched, cache), runner)
    logger.info("engine ready in %.1f s (%s)", sum(clock.laps.values()),
                ", ".join(f"{k} {v:.1f} s" for k, v in clock.laps.items()))
    if dev.type == "cuda":
        compile_log.serving()
    return EngineParts(core=core, source=source, model_config=model_config, scheduler_config=sched,
                       kv_plan=plan, tokenizer=tok, device=dev, grammar_backend=grammar,
                       startup_seconds=clock.laps, quant_config=quant.config if quant is not None else None,
                       model=nn_model, memory_plan=memory)


def resolve_quantization(source: ModelSource, quant_config: Optional[QuantConfig],
                         dev: torch.device) -> Optional[ModelQuantization]:
    """The quantization to build with: a saved engine's or a pre-quantized checkpoint's own (a
    quant_config argument must then ask for nothing else), else quant_config applied to the
    float checkpoint; checked for this device."""
    if source.format == "engine":
        from tritium.loader.saved_engine import check_engine_device

        check_engine_device(source.engine, dev)
        saved = QuantConfig.from_dict(source.engine.quant_config) if source.engine.quant_config else None
        _check_no_requantization(saved, quant_config, f"{source.path} is a saved engine",
                                 "rebuild it from its source checkpoint with `tritium build`")
        return ModelQuantization(saved, serialized=True) if saved is not None and saved.is_quantized else None
    if source.checkpoint_quant is not None:
        ckpt = source.checkpoint_quant
        _check_no_requantization(ckpt.quant_config, quant_config, f"{source.path} is a pre-quantized "
                                 f"{ckpt.format} checkpoint", "leave quant_config / --quantization out")
        check_device_support(ckpt.quant_config, dev)
        return ModelQuantization(ckpt.quant_config, serialized=True)
    if quant_config is None or not quant_config.is_quantized:
        return None
    check_device_support(quant_config, dev)
    return ModelQuantization(quant_config)


def _check_no_requantization(saved: Optional[QuantConfig], asked: Optional[QuantConfig], what: str, fix: str) -> None:
    """Weights already quantized are loaded as they are: asking for another algorithm (or a
    KV cache quantization they were not calibrated for) is an error, not a silent choice."""
    if asked is None or not asked.is_quantized:
        return
    have = (saved.quant_algo, saved.kv_cache_quant_algo) if saved is not None else (None, None)
    want = (asked.quant_algo or have[0], asked.kv_cache_quant_algo or have[1])
    if want != have:
        names = lambda pair: "/".join(a.value if a else "none" for a in pair)  # noqa: E731
        raise ValueError(f"{what} with quantization {names(have)} (weights / KV cache); it cannot be quantized "
                         f"again at load as {names(want)}: {fix}")


def engine_dtype(source: ModelSource, dtype: str) -> str:
    """A saved engine runs in the dtype it was built in."""
    saved = source.engine.dtype
    if dtype not in ("auto", saved, None):
        raise ValueError(f"{source.path} is a saved engine built for dtype {saved}; dtype={dtype!r} would need a "
                         "rebuild (`tritium build ... --dtype`)")
    return saved


class _PhaseClock:
    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[phase] = now - self._last
        self._last = now
