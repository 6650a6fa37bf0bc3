"""POST /v1/completions: text or token-id prompts (one or many), echo, logprobs in the legacy
OpenAI shape, streaming.

lm-evaluation-harness scores a continuation with echo=true and logprobs=k: the response carries
the prompt's own token logprobs (the engine's prompt_logprobs). With max_tokens=0 (score only)
the engine still generates one token, which is left out of the text, logprobs and usage.
"""
from __future__ import annotations

import time
from typing import Optional

from fastapi.responses import JSONResponse, StreamingResponse

from tritium.entrypoints.openai.errors import bad_request
from tritium.entrypoints.openai.protocol import (CompletionChoice, CompletionChunk, CompletionLogprobs,
                                                 CompletionRequest, CompletionResponse, random_id)
from tritium.entrypoints.openai.serving_engine import (OpenAIServing, PromptRun, collect_finals, sse_events,
                                                       usage_of)
from tritium.outputs import CompletionOutput, PositionLogprobs, RequestOutput


class OpenAIServingCompletion(OpenAIServing):
    async def create(self, request: CompletionRequest, raw_request):
        self.check_model(request.model)
        if request.suffix is not None:
            raise bad_request("suffix is not supported by this server", "suffix")
        prompts = _prompt_list(request.prompt)
        score_only = request.max_tokens == 0
        if score_only and not request.echo:
            raise bad_request("max_tokens=0 needs echo=true (it scores the prompt without generating)", "max_tokens")
        max_tokens = 1 if score_only else request.max_tokens
        runs = [PromptRun(i, self.tokenize(p)) for i, p in enumerate(prompts)]
        for run in runs:
            self.check_length(run.prompt, max_tokens)
        echo_logprobs = request.echo and request.logprobs is not None
        params = self.sampling_params(request, max_tokens, logprobs=request.logprobs, best_of=request.best_of,
                                      prompt_logprobs=request.logprobs if echo_logprobs else None,
                                      guided_decoding=self.extra_guided(request))
        if request.stream and params.best_of > params.n:
            raise bad_request("best_of > n cannot be streamed: the best completions are known only at the end",
                              "best_of")
        self.submit(runs, params)
        view = _CompletionView(request, score_only, self.llm.tokenizer)
        if request.stream:
            return StreamingResponse(sse_events(self._stream(runs, raw_request, request, view)),
                                     media_type="text/event-stream")
        finals = await collect_finals(self, runs, raw_request)
        choices = [view.choice(run.index * request.n + c.index, f, c, full=True)
                   for run, f in zip(runs, finals) for c in f.outputs]
        usage = usage_of(finals)
        if score_only:
            usage.total_tokens -= usage.completion_tokens
            usage.completion_tokens = 0
        return JSONResponse(CompletionResponse(model=self.model_name, choices=choices, usage=usage).model_dump())

    async def _stream(self, runs, raw_request, request: CompletionRequest, view: "_CompletionView"):
        response_id, created = random_id("cmpl"), int(time.time())
        latest: dict[int, RequestOutput] = {}
        options = request.stream_options
        async for run, out in self.outputs(runs, raw_request):
            latest[run.index] = out
            choices = [view.choice(run.index * request.n + c.index, out, c, full=False) for c in out.outputs]
            usage = usage_of(list(latest.values())) if options and options.continuous_usage_stats else None
            for choice in choices:  # one choice per chunk, as OpenAI sends them
                if choice is not None:
                    yield CompletionChunk(id=response_id, created=created, model=self.model_name, choices=[choice],
                                          usage=usage).model_dump_json()
        if options and options.include_usage:
            yield CompletionChunk(id=response_id, created=created, model=self.model_name, choices=[],
                                  usage=usage_of(list(latest.values()))).model_dump_json()


def _prompt_list(prompt) -> list:
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise bad_request("prompt is empty", "prompt")
    return [prompt] if isinstance(prompt[0], int) else list(prompt)


class _CompletionView:
    """Builds choices from engine snapshots: echo, the score-only token drop, legacy logprobs."""

    def __init__(self, request: CompletionRequest, score_only: bool, tokenizer):
        self.request = request
        self.score_only = score_only
        self.tokenizer = tokenizer
        self._echoed: set[int] = set()  # streaming: choices whose prompt was sent
        self._next_offset: dict[int, int] = {}  # streaming: text_offset of each choice's next token

    def choice(self, index: int, out: RequestOutput, c: CompletionOutput, full: bool) -> Optional[CompletionChoice]:
        """full: the whole choice (non-streaming); else only what this snapshot adds (None: nothing)."""
        echo_now = self.request.echo and (full or (index not in self._echoed and (c.token_ids or c.finished)))
        if echo_now:
            self._echoed.add(index)
        if self.score_only:
            new_tokens = 0
            text = ""
        else:
            new_tokens = len(c.token_ids) if full else len(c.token_ids_diff)
            text = c.text if full else c.text_diff
        if not (echo_now or text or new_tokens or c.finished):
            return None
        prompt_text = out.prompt or ""
        logprobs = None
        if self.request.logprobs is not None:
            start = self._next_offset.get(index, 0 if self.request.echo else len(prompt_text))
            logprobs = self._logprobs(out, c, echo_now, new_tokens, start)
            if logprobs.tokens:
                self._next_offset[index] = logprobs.text_offset[-1] + len(logprobs.tokens[-1])
        if echo_now:
            text = prompt_text + text
        return CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=c.finish_reason,
                                stop_reason=c.stop_reason)

    def _logprobs(self, out: RequestOutput, c: CompletionOutput, with_prompt: bool, num_new: int,
                  start_offset: int) -> CompletionLogprobs:
        result = CompletionLogprobs()
        if with_prompt:
            first = out.prompt_token_ids[0]
            result.tokens.append(self._decode(first))
            result.token_logprobs.append(None)
            result.top_logprobs.append(None)
            for token_id, position in zip(out.prompt_token_ids[1:], (out.prompt_logprobs or [None])[1:]):
                self._append(result, token_id, position)
        if num_new:
            for token_id, position in zip(c.token_ids[-num_new:], (c.logprobs or [])[-num_new:]):
                self._append(result, token_id, position)
        offset = start_offset
        for token in result.tokens:
            result.text_offset.append(offset)
            offset += len(token)
        return result

    def _append(self, result: CompletionLogprobs, token_id: int, position: Optional[PositionLogprobs]) -> None:
        chosen = position.get(token_id) if position else None
        result.tokens.append(chosen.decoded_token if chosen and chosen.decoded_token is not None
                             else self._decode(token_id))
        result.token_logprobs.append(chosen.logprob if chosen else None)
        result.top_logprobs.append(
            {(lp.decoded_token if lp.decoded_token is not None else self._decode(tid)): lp.logprob
             for tid, lp in position.items()} if position else None)

    def _decode(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id]) if self.tokenizer is not None else f"<token {token_id}>"
