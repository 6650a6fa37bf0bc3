"""POST /v1/chat/completions: the model's chat template, logprobs / top_logprobs, n, streaming,
and response_format (json_object, json_schema) enforced by guided decoding.

tools / tool_choice get a clear 400: this server has no tool-call parser, and a model that
writes tool calls as plain text would silently break clients that expect `tool_calls`.
"""
from __future__ import annotations

import time
from typing import Optional

import jinja2
from fastapi.responses import JSONResponse, StreamingResponse

from tritium.entrypoints.openai.errors import bad_request
from tritium.entrypoints.openai.protocol import (ChatChoice, ChatCompletionChunk, ChatCompletionRequest,
                                                 ChatCompletionResponse, ChatLogprobs, ChatMessage,
                                                 ChatResponseMessage, ChatStreamChoice, DeltaMessage,
                                                 ResponseFormat, TokenLogprob, TopLogprob, random_id)
from tritium.entrypoints.openai.serving_engine import (OpenAIServing, PromptRun, collect_finals, sse_events,
                                                       usage_of)
from tritium.outputs import PositionLogprobs
from tritium.structured_output import GuidedDecodingParams


class OpenAIServingChat(OpenAIServing):
    def render(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
        """The conversation through the model's chat template (400 on anything it cannot take)."""
        conversation = []
        for i, message in enumerate(messages):
            content = message.content
            if isinstance(content, list):
                parts = []
                for j, part in enumerate(content):
                    kind = part.type if hasattr(part, "type") else part.get("type")
                    if kind != "text":
                        raise bad_request(f"content part type {kind!r} is not supported (text only)",
                                          f"messages.{i}.content.{j}.type")
                    parts.append(part.text)
                content = "".join(parts)
            conversation.append({"role": message.role, "content": content or ""})
        try:
            return self.llm.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt)
        except (ValueError, jinja2.TemplateError) as e:
            raise bad_request(f"the chat template cannot render these messages: {e}", "messages") from None

    def guided_decoding(self, fmt: Optional[ResponseFormat]) -> Optional[GuidedDecodingParams]:
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            guided = GuidedDecodingParams(json_object=True)
        elif fmt.json_schema is None:
            raise bad_request("response_format type json_schema needs a json_schema object", "response_format")
        else:
            guided = GuidedDecodingParams(json=fmt.json_schema.schema_)
        if self.llm.grammar_backend is None:
            raise bad_request("response_format needs a tokenizer; this model has none", "response_format")
        try:
            self.llm.grammar_backend.validate(guided)
        except ValueError as e:
            raise bad_request(str(e), "response_format") from None
        return guided

    async def create(self, request: ChatCompletionRequest, raw_request):
        self.check_model(request.model)
        if request.tools:
            raise bad_request("tools are not supported by this server (it has no tool-call parser)", "tools")
        if request.tool_choice not in (None, "none"):
            raise bad_request("tool_choice is not supported by this server (it has no tool-call parser)",
                              "tool_choice")
        if request.top_logprobs is not None and not request.logprobs:
            raise bad_request("top_logprobs needs logprobs=true", "top_logprobs")
        prompt = self.tokenize(self.render(request.messages, request.add_generation_prompt), "messages")
        length_param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        max_tokens = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
        self.check_length(prompt, max_tokens, length_param)
        params = self.sampling_params(request, max_tokens,
                                      logprobs=(request.top_logprobs or 0) if request.logprobs else None,
                                      guided_decoding=self.guided_decoding(request.response_format))
        runs = [PromptRun(0, prompt)]
        self.submit(runs, params)
        if request.stream:
            return StreamingResponse(sse_events(self._stream(runs, raw_request, request)),
                                     media_type="text/event-stream")
        final = (await collect_finals(self, runs, raw_request))[0]
        choices = [ChatChoice(index=c.index, message=ChatResponseMessage(content=c.text),
                              logprobs=self._logprobs(c.token_ids, c.logprobs, request),
                              finish_reason=c.finish_reason, stop_reason=c.stop_reason) for c in final.outputs]
        return JSONResponse(ChatCompletionResponse(model=self.model_name, choices=choices,
                                                   usage=usage_of([final])).model_dump())

    async def _stream(self, runs, raw_request, request: ChatCompletionRequest):
        response_id, created = random_id("chatcmpl"), int(time.time())
        options = request.stream_options

        def chunk(choices, usage=None) -> str:
            return ChatCompletionChunk(id=response_id, created=created, model=self.model_name, choices=choices,
                                       usage=usage).model_dump_json()

        for i in range(request.n):  # one choice per chunk, as OpenAI sends them
            yield chunk([ChatStreamChoice(index=i, delta=DeltaMessage(role="assistant", content=""))])
        final = None
        async for _, out in self.outputs(runs, raw_request):
            final = out
            choices = []
            for c in out.outputs:
                new = len(c.token_ids_diff)
                if not (c.text_diff or c.finished):
                    continue
                logprobs = self._logprobs(c.token_ids[len(c.token_ids) - new:],
                                          c.logprobs[len(c.token_ids) - new:] if c.logprobs else None, request)
                choices.append(ChatStreamChoice(index=c.index, delta=DeltaMessage(content=c.text_diff),
                                                logprobs=logprobs, finish_reason=c.finish_reason,
                                                stop_reason=c.stop_reason))
            usage = usage_of([out]) if options and options.continuous_usage_stats else None
            for choice in choices:
                yield chunk([choice], usage)
        if options and options.include_usage and final is not None:
            yield chunk([], usage_of([final]))

    def _logprobs(self, token_ids: list[int], positions: Optional[list[PositionLogprobs]],
                  request: ChatCompletionRequest) -> Optional[ChatLogprobs]:
        if not request.logprobs or positions is None:
            return None
        k = request.top_logprobs or 0
        content = []
        for token_id, position in zip(token_ids, positions):
            chosen = position[token_id]
            top = sorted((e for e in position.values() if e.rank is not None and e.rank <= k),
                         key=lambda e: e.rank)[:k]
            content.append(TokenLogprob(token=self._text(chosen, token_id), logprob=chosen.logprob,
                                        bytes=list(self._text(chosen, token_id).encode()),
                                        top_logprobs=[TopLogprob(token=e.decoded_token or "", logprob=e.logprob,
                                                                 bytes=list((e.decoded_token or "").encode()))
                                                      for e in top]))
        return ChatLogprobs(content=content)

    def _text(self, entry, token_id: int) -> str:
        return entry.decoded_token if entry.decoded_token is not None else self.llm.tokenizer.decode([token_id])
