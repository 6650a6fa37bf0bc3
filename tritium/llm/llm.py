"""LLM: the offline / async Python API (TensorRT-LLM's names).

    llm = LLM(model="path/or.gguf", build_config=BuildConfig(max_batch_size=64))
    for out in llm.generate(["Hello"], SamplingParams(max_tokens=32)):
        print(out.prompt, out.outputs[0].text)

The engine steps in a background thread (or, with engine_process=True, a child process);
`generate` blocks with a progress bar, `generate_async` streams.
"""
from __future__ import annotations

import itertools
import queue
import threading
from typing import Any, Optional, Sequence, Union

from tqdm.auto import tqdm

from tritium.config import BuildConfig, KvCacheConfig
from tritium.core.request import Request
from tritium.engine.background import BackgroundEngine
from tritium.engine.factory import build_engine
from tritium.engine.stats import EngineTotals, IterationStats
from tritium.llm.generation_stream import GenerationStream, batched_wakeups
from tritium.llm.inputs import (EngineLimits, PromptInput, check_beam_fits, check_params, normalize_params,
                                normalize_prompts, tokenize_prompt)
from tritium.llm.llm_args import resolve_llm_args
from tritium.llm.output_processor import OutputProcessor
from tritium.outputs import RequestOutput
from tritium.quantization import CalibConfig, QuantConfig
from tritium.sampling_params import SamplingParams
from tritium.structured_output.backend import GrammarBackend

Messages = list[dict[str, str]]


class LLM:
    """kwargs: TensorRT-LLM's top-level arguments (max_batch_size, max_num_tokens, max_seq_len,
    max_beam_width, max_input_len, enable_chunked_prefill, scheduler_config, batched_logits_processor,
    disable_overlap_scheduler, cuda_graph_config, trust_remote_code, ...: see
    tritium/llm/llm_args.py); any other is a ValueError naming it. `llm.scheduler_config` is what
    the engine's scheduler was built with (ResolvedSchedulerConfig)."""

    def __init__(self, model: Optional[str] = None, tokenizer: Optional[str] = None, dtype: str = "auto",
                 build_config: Optional[BuildConfig] = None, kv_cache_config: Optional[KvCacheConfig] = None,
                 tensor_parallel_size: int = 1, load_format: str = "auto", device: Optional[str] = None,
                 skip_tokenizer_init: bool = False, enforce_eager: bool = False,
                 quant_config: Optional[QuantConfig] = None, calib_config: Optional[CalibConfig] = None,
                 engine_process: bool = False, **kwargs: Any):
        """engine_process: run the engine's step loop in a child process (tritium serve does), so
        that the front's work (detokenizing, an HTTP server) never delays a step; needs requests
        without logits processors. A script that sets it must guard its top level with
        `if __name__ == "__main__":` (the child is started with spawn)."""
        if tensor_parallel_size != 1:
            raise ValueError(f"tensor_parallel_size={tensor_parallel_size}: only 1 is supported in this version")
        self.build_config, self.kv_cache_config, scheduling, options = resolve_llm_args(
            build_config, kv_cache_config, enforce_eager, kwargs)
        if model is None:
            from tritium.default_model import default_model_path

            model = default_model_path()
        self.model_path = model
        self.batched_logits_processor = options.batched_logits_processor
        self.engine_process = engine_process
        if engine_process and options.batched_logits_processor is not None:
            raise ValueError("batched_logits_processor runs in the engine: it cannot be used with engine_process=True")
        build_kwargs = dict(model=model, tokenizer=tokenizer, dtype=dtype, build_config=self.build_config,
                            kv_cache_config=self.kv_cache_config, scheduler_config=scheduling,
                            cuda_graph_config=options.cuda_graph_config, load_format=load_format, device=device,
                            skip_tokenizer_init=skip_tokenizer_init, enforce_eager=options.enforce_eager,
                            runner_options=dict(batched_logits_processor=options.batched_logits_processor,
                                                allow_overlap=not options.disable_overlap_scheduler),
                            quant_config=quant_config, calib_config=calib_config)
        self._lock = threading.Lock()  # guards the output processor across the caller and engine threads
        self._ids = itertools.count()
        self._parts = None  # the engine's parts when it runs in this process
        if engine_process:
            engine, info, tok = self._start_engine_process(build_kwargs)
        else:
            self._parts = info = build_engine(**build_kwargs)
            tok = info.tokenizer
        self.quant_config = info.quant_config
        self.model_config = info.model_config
        self.scheduler_config = info.scheduler_config
        self.kv_cache_plan = info.kv_plan
        self.startup_seconds = dict(info.startup_seconds)  # start-up phase -> wall seconds (also logged)
        self.device = info.device
        self.tokenizer = tok
        self.grammar_backend = (self._parts.grammar_backend if self._parts is not None else
                                GrammarBackend.for_model(tok, self.model_config))  # the front's own (engine process)
        self._processor = OutputProcessor(self.tokenizer)
        self._engine = engine if engine_process else BackgroundEngine(self._parts.core, self._on_outputs,
                                                                      self._on_error)

    def _start_engine_process(self, build_kwargs: dict[str, Any]):
        """Start the child building the engine; load the tokenizer here meanwhile."""
        from tritium.engine.engine_process import EngineProcess
        from tritium.loader.model_loader import load_tokenizer
        from tritium.loader.source import resolve_model_source

        engine = EngineProcess(build_kwargs, self._on_outputs, self._on_error)
        try:
            tok = None
            if not build_kwargs["skip_tokenizer_init"]:
                source = resolve_model_source(build_kwargs["model"], build_kwargs["load_format"], verify=False)
                tok = load_tokenizer(source, build_kwargs["tokenizer"])
            info = engine.wait_ready()
        except BaseException:
            engine.shutdown(timeout=10)
            raise
        return engine, info, tok

    # ---- engine callbacks (engine thread) -----------------------------------------------------
    def _on_outputs(self, outputs):
        with self._lock, batched_wakeups():
            return self._processor.process_outputs(outputs)

    def _on_error(self, exc: BaseException, child_ids: list[str]) -> None:
        with self._lock, batched_wakeups():
            self._processor.fail(child_ids, exc)

    # ---- submission ---------------------------------------------------------------------------
    @property
    def max_seq_len(self) -> int:
        return self.scheduler_config.max_model_len

    def _prepare(self, prompts, sampling_params):
        items, single = normalize_prompts(prompts)
        params = normalize_params(sampling_params, len(items))
        # Validate everything before submitting anything.
        limits = EngineLimits(vocab_size=self.model_config.vocab_size, max_seq_len=self.max_seq_len,
                              max_beam_width=self.scheduler_config.max_beam_width,
                              max_input_len=self.build_config.max_input_len,
                              num_kv_blocks=self.kv_cache_plan.num_blocks, block_size=self.kv_cache_plan.block_size,
                              has_batched_processor=self.batched_logits_processor is not None)
        for p in params:
            check_params(p, self.tokenizer, limits)
            if self.engine_process and p.logits_processor:
                raise ValueError("SamplingParams.logits_processor runs in the engine: it cannot be used with "
                                 "LLM(engine_process=True)")
            if p.guided_decoding is not None:
                if self.grammar_backend is None:
                    raise ValueError("SamplingParams.guided_decoding needs a tokenizer; this model has none")
                self.grammar_backend.validate(p.guided_decoding)
        tokenized = [tokenize_prompt(item, self.tokenizer, limits.vocab_size, limits.max_seq_len, p,
                                     limits.max_input_len) for item, p in zip(items, params)]
        for prompt, p in zip(tokenized, params):
            check_beam_fits(prompt.token_ids, p, limits)
        return tokenized, params, single

    def _submit(self, prompt, params: SamplingParams, sink, streaming: bool) -> str:
        request_id = str(next(self._ids))
        if streaming and params.best_of > params.n and not params.use_beam_search:
            raise ValueError("SamplingParams.best_of > n cannot be streamed: the best ones are known only at the end")
        if streaming and params.use_beam_search:
            raise ValueError("SamplingParams.use_beam_search cannot be streamed: beams are reordered until the end")
        with self._lock:
            child_ids = self._processor.add_request(request_id, prompt.prompt, prompt.token_ids, params, sink,
                                                    streaming)
        requests = []
        for i, cid in enumerate(child_ids):
            child_params = params.child(i) if len(child_ids) > 1 else params
            requests.append(Request(cid, prompt.token_ids, child_params, self.model_config.eos_token_ids))
        try:
            self._engine.add_requests(requests)
        except BaseException:
            with self._lock:
                self._processor.discard(request_id)
            raise
        return request_id

    def abort(self, request_id: str) -> None:
        with self._lock:
            child_ids = self._processor.child_ids(request_id)
        self._engine.abort(child_ids)

    # ---- public API -----------------------------------------------------------------------------
    def generate(self, prompts: Union[PromptInput, Sequence[PromptInput]],
                 sampling_params: Union[None, SamplingParams, Sequence[SamplingParams]] = None,
                 use_tqdm: bool = True) -> Union[RequestOutput, list[RequestOutput]]:
        """Generate for one prompt (returns one RequestOutput) or a list (returns a list, in order)."""
        self._check_alive()
        tokenized, params, single = self._prepare(prompts, sampling_params)
        done: queue.Queue = queue.Queue()
        order = {}
        for i, (prompt, p) in enumerate(zip(tokenized, params)):
            order[self._submit(prompt, p, done.put, streaming=False)] = i
        results: list[Optional[RequestOutput]] = [None] * len(tokenized)
        bar = tqdm(total=len(tokenized), desc="Generating", unit="req", disable=not use_tqdm or single)
        error = None
        for _ in range(len(tokenized)):
            item = done.get()
            if isinstance(item, BaseException):
                error = item
                continue
            results[order[item.request_id]] = item
            bar.update(1)
        bar.close()
        if error is not None:
            raise error
        return results[0] if single else results

    def generate_async(self, prompt: PromptInput, sampling_params: Optional[SamplingParams] = None,
                       streaming: bool = False) -> GenerationStream:
        """Submit one prompt; iterate the returned stream with `async for`, or await `.aresult()`."""
        self._check_alive()
        tokenized, params, _ = self._prepare(prompt, sampling_params)
        stream = GenerationStream("", self.abort)
        stream.request_id = self._submit(tokenized[0], params[0], stream.put, streaming)
        return stream

    def apply_chat_template(self, messages: Messages, add_generation_prompt: bool = True,
                            tools: Optional[list[dict]] = None) -> str:
        """tools: OpenAI-style function tools, for templates that describe them to the model."""
        if self.tokenizer is None or not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model has no chat template")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, tools=tools,
                                                  add_generation_prompt=add_generation_prompt)

    def chat(self, messages: Union[Messages, list[Messages]],
             sampling_params: Union[None, SamplingParams, Sequence[SamplingParams]] = None,
             use_tqdm: bool = True) -> Union[RequestOutput, list[RequestOutput]]:
        """Generate replies to one conversation (a list of {"role", "content"}) or a list of them."""
        single = bool(messages) and isinstance(messages[0], dict)
        conversations = [messages] if single else list(messages)
        prompts = [self.apply_chat_template(c) for c in conversations]
        outs = self.generate(prompts, sampling_params, use_tqdm=use_tqdm)
        return outs[0] if single else outs

    def save(self, engine_dir: str) -> None:
        """Write this engine (quantized weights, configs, memory plan, tokenizer) to `engine_dir`;
        `LLM(model=engine_dir)` loads it without re-quantizing. See loader/saved_engine.py."""
        from tritium.engine.engine_dir import engine_description
        from tritium.loader.saved_engine import save_engine

        if self._parts is None:  # the engine (its weights) lives in the child process
            self._engine.call("save", engine_dir, self.build_config)
            return
        save_engine(engine_dir, self._parts.model, engine_description(self._parts, self.build_config),
                    self.tokenizer)

    def get_stats(self, timeout: Optional[float] = None) -> list[IterationStats]:
        """Per-step engine statistics recorded since the last call, oldest first (TensorRT-LLM's
        llm.get_stats()); the engine keeps the last 16384 steps when nobody asks. `timeout` is
        accepted for TensorRT-LLM's signature: the statistics are already here, nothing waits."""
        return self._engine.drain_stats()

    def get_stats_totals(self) -> EngineTotals:
        """Steps, prompt / generation tokens, preemptions and busy time since the engine started."""
        return self._engine.stats_totals()

    def _check_alive(self) -> None:
        if not self._engine.is_alive:
            raise RuntimeError("this LLM has been shut down")

    def shutdown(self) -> None:
        self._engine.shutdown()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def __del__(self):
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.shutdown(timeout=1.0)

