"""What the completions and chat endpoints share: model check, SamplingParams from a request,
length checks, admission control, and streaming engine outputs with disconnect handling.

Every engine request goes through RequestTracker, which knows what is in flight: it refuses new
work with 503 + Retry-After when too many requests wait (--max-queued-requests) or while the
server drains, and it can fail every open stream at once if the engine thread dies.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import AsyncIterator, Optional, Sequence

from tritium.entrypoints.openai.errors import OpenAIError, bad_request, from_value_error, internal_error
from tritium.entrypoints.openai.metrics import ServerMetrics
from tritium.entrypoints.openai.protocol import UsageInfo, _SamplingRequest
from tritium.llm.generation_stream import GenerationStream
from tritium.llm.inputs import TokenizedPrompt, tokenize_prompt
from tritium.outputs import RequestOutput
from tritium.sampling_params import SamplingParams
from tritium.structured_output import GuidedDecodingParams

GUIDED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")
_REGEX_META = set("\\.^$|?*+()[]{}")


def guided_fields_given(request: _SamplingRequest) -> list[str]:
    """The vLLM guided_* fields a request sets."""
    return [name for name in GUIDED_FIELDS if getattr(request, name) is not None]


def literal_regex(text: str) -> str:
    """A regex matching exactly `text` (only the regex syntax's own characters escaped)."""
    return "".join("\\" + ch if ch in _REGEX_META else ch for ch in text)

logger = logging.getLogger(__name__)


class RequestTracker:
    """Engine requests in flight, for admission control, draining and engine failure."""

    def __init__(self, max_queued_requests: Optional[int], max_batch_size: int, metrics: ServerMetrics):
        self.max_queued_requests = max_queued_requests
        self.max_batch_size = max_batch_size
        self.metrics = metrics
        self.draining = False
        self.streams: set[GenerationStream] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def num_in_flight(self) -> int:
        return len(self.streams)

    def num_queued_if_admitted(self, num_new: int) -> int:
        """Requests that would not be in the running batch: beyond the batch size, or waiting
        in the scheduler for KV room."""
        snap = self.metrics.snapshot()
        return max(self.num_in_flight + num_new - self.max_batch_size, snap.num_waiting if snap else 0)

    def admit(self, num_requests: int) -> None:
        if self.draining:
            self.metrics.record_rejection("draining")
            raise OpenAIError(503, "the server is shutting down and takes no new requests", retry_after=5)
        limit = self.max_queued_requests
        if limit is not None and self.num_queued_if_admitted(num_requests) > limit:
            self.metrics.record_rejection("queue_full")
            raise OpenAIError(503, f"the server is at capacity ({self.num_in_flight} requests in flight, "
                                   f"at most {limit} may queue); retry later", retry_after=1)

    def add(self, stream: GenerationStream) -> None:
        self.streams.add(stream)
        self._idle.clear()

    def discard(self, stream: GenerationStream) -> None:
        self.streams.discard(stream)
        if not self.streams:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def abort_all(self) -> None:
        for stream in list(self.streams):
            stream.abort()

    def fail_all(self, exc: BaseException) -> None:
        """The engine is gone: end every open stream with this error instead of a hang."""
        for stream in list(self.streams):
            stream.put(exc)


async def wait_for_disconnect(raw_request) -> None:
    """Returns when the client has gone (the request body is already read)."""
    while True:
        message = await raw_request.receive()
        if message["type"] == "http.disconnect":
            return


@dataclass
class PromptRun:
    """One prompt of a request and its engine stream."""

    index: int
    prompt: TokenizedPrompt
    stream: Optional[GenerationStream] = None


class OpenAIServing:
    def __init__(self, llm, served_model_names: Sequence[str], tracker: RequestTracker, metrics: ServerMetrics):
        self.llm = llm
        self.served_model_names = list(served_model_names)
        self.tracker = tracker
        self.metrics = metrics

    @property
    def model_name(self) -> str:
        return self.served_model_names[0]

    @property
    def max_seq_len(self) -> int:
        return self.llm.max_seq_len

    def check_model(self, model: Optional[str]) -> None:
        if model is not None and model not in self.served_model_names:
            raise OpenAIError(404, f"The model `{model}` does not exist; this server serves "
                                   f"{', '.join(self.served_model_names)}", param="model", code="model_not_found")

    def tokenize(self, prompt, param: str = "prompt") -> TokenizedPrompt:
        try:
            return tokenize_prompt(prompt, self.llm.tokenizer, self.llm.model_config.vocab_size, self.max_seq_len)
        except ValueError as e:
            raise bad_request(str(e), param) from None

    def check_length(self, prompt: TokenizedPrompt, max_tokens: Optional[int], param: str = "max_tokens") -> None:
        if max_tokens is not None and len(prompt.token_ids) + max_tokens > self.max_seq_len:
            raise bad_request(
                f"the prompt ({len(prompt.token_ids)} tokens) plus {param}={max_tokens} exceeds the model's "
                f"context of {self.max_seq_len} tokens", param)

    def check_guided(self, guided: GuidedDecodingParams, param: str) -> GuidedDecodingParams:
        """400 naming `param` when the model has no tokenizer or the guide does not compile."""
        if self.llm.grammar_backend is None:
            raise bad_request(f"{param} needs a tokenizer; this model has none", param)
        try:
            self.llm.grammar_backend.validate(guided)
        except ValueError as e:
            raise bad_request(str(e), param) from None
        return guided

    def extra_guided(self, request: _SamplingRequest) -> Optional[GuidedDecodingParams]:
        """vLLM's guided_json / guided_regex / guided_choice / guided_grammar (one at most)."""
        given = guided_fields_given(request)
        if not given:
            return None
        if len(given) > 1:
            raise bad_request(f"give one of {', '.join(GUIDED_FIELDS)}, not {' and '.join(given)}", given[1])
        name = given[0]
        value = getattr(request, name)
        try:
            if name == "guided_choice":
                guided = GuidedDecodingParams(regex="|".join(f"({literal_regex(c)})" for c in value))
            else:
                guided = GuidedDecodingParams(**{name[len("guided_"):]: value})
        except ValueError as e:
            raise bad_request(str(e), name) from None
        return self.check_guided(guided, name)

    @staticmethod
    def sampling_params(request: _SamplingRequest, max_tokens: Optional[int], **extra) -> SamplingParams:
        if request.logit_bias:
            raise bad_request("logit_bias is not supported by this server", "logit_bias")
        fields = dict(max_tokens=max_tokens, n=request.n, stop=request.stop, seed=request.seed,
                      presence_penalty=request.presence_penalty, frequency_penalty=request.frequency_penalty,
                      ignore_eos=request.ignore_eos, min_tokens=request.min_tokens,
                      include_stop_str_in_output=request.include_stop_str_in_output,
                      skip_special_tokens=request.skip_special_tokens, stop_token_ids=request.stop_token_ids)
        optional = dict(temperature=request.temperature, top_p=request.top_p, top_k=request.top_k,
                        min_p=request.min_p, repetition_penalty=request.repetition_penalty)
        fields.update({k: v for k, v in optional.items() if v is not None})
        fields.update(extra)
        try:
            return SamplingParams(**fields)
        except ValueError as e:
            raise from_value_error(e) from None

    # ---- generation -----------------------------------------------------------------------
    def submit(self, runs: list[PromptRun], params: SamplingParams) -> None:
        """Admit and start every prompt, or none (all validation happens before the first submit)."""
        self.tracker.admit(len(runs) * params.best_of)
        streaming = params.best_of == params.n  # best_of > n is only known at the end
        started: list[PromptRun] = []
        try:
            for run in runs:
                run.stream = self.llm.generate_async(run.prompt.token_ids, params, streaming=streaming)
                self.tracker.add(run.stream)
                started.append(run)
        except ValueError as e:
            for run in started:
                run.stream.abort()
                self.tracker.discard(run.stream)
            raise from_value_error(e) from None

    async def outputs(self, runs: list[PromptRun], raw_request) -> AsyncIterator[tuple[PromptRun, RequestOutput]]:
        """Snapshots of every prompt's request as they come; aborts them all if the client leaves
        or the consumer stops early. Records metrics as each finishes."""
        watcher = asyncio.ensure_future(wait_for_disconnect(raw_request))
        watcher.add_done_callback(lambda t: t.cancelled() or [r.stream.abort() for r in runs])
        try:
            if len(runs) == 1:
                async for out in self._timed(runs[0]):
                    yield runs[0], out
            else:
                async for item in _merge([self._timed(r) for r in runs], runs):
                    yield item
        finally:
            watcher.cancel()
            for run in runs:
                if not run.stream.finished:
                    run.stream.abort()
                self.tracker.discard(run.stream)

    async def _timed(self, run: PromptRun) -> AsyncIterator[RequestOutput]:
        arrival = time.monotonic()
        first: Optional[float] = None
        async for out in run.stream:
            if first is None and any(c.token_ids for c in out.outputs):
                first = time.monotonic()
            if out.finished:
                self.metrics.record_finished(
                    len(out.prompt_token_ids), sum(len(c.token_ids) for c in out.outputs),
                    out.outputs[0].finish_reason if out.outputs else None, arrival, first, time.monotonic())
            yield out


async def _merge(iterators, runs: list[PromptRun]):
    """Interleave several prompts' snapshots as they arrive."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(run, it):
        try:
            async for out in it:
                await queue.put((run, out))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            await queue.put((run, e))
        finally:
            await queue.put((run, done))

    tasks = [asyncio.ensure_future(pump(r, it)) for r, it in zip(runs, iterators)]
    remaining = len(tasks)
    try:
        while remaining:
            run, item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield run, item
    finally:
        for t in tasks:
            t.cancel()


def usage_of(finals: Sequence[RequestOutput]) -> UsageInfo:
    prompt = sum(len(o.prompt_token_ids) for o in finals)
    completion = sum(len(c.token_ids) for o in finals for c in o.outputs)
    return UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def sse(data: str) -> str:
    return f"data: {data}\n\n"


async def sse_events(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """SSE framing; an error after the stream started goes in-band, then [DONE]."""
    try:
        async for data in chunks:
            yield sse(data)
    except OpenAIError as e:
        yield sse(json.dumps(e.body()))
    except Exception as e:  # noqa: BLE001 - a real fault, reported in-band
        logger.exception("stream failed")
        yield sse(json.dumps(internal_error(e).body()))
    yield "data: [DONE]\n\n"


async def collect_finals(serving: OpenAIServing, runs: list[PromptRun], raw_request) -> list[RequestOutput]:
    finals: list[Optional[RequestOutput]] = [None] * len(runs)
    async for run, out in serving.outputs(runs, raw_request):
        if out.finished:
            finals[run.index] = out
    return finals
