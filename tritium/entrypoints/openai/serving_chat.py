"""POST /v1/chat/completions: the model's chat template, logprobs / top_logprobs, n, streaming,
response_format (json_object, json_schema) and tool calls (tool_choice "required" or a named
function; tool_calls.py) enforced by guided decoding."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import jinja2
from fastapi.responses import JSONResponse, StreamingResponse

from tritium.entrypoints.openai.errors import bad_request
from tritium.entrypoints.openai.protocol import (ChatChoice, ChatCompletionChunk, ChatCompletionRequest,
                                                 ChatCompletionResponse, ChatLogprobs, ChatMessage,
                                                 ChatResponseMessage, ChatStreamChoice, DeltaMessage,
                                                 DeltaFunctionCall, DeltaToolCall, TokenLogprob, TopLogprob,
                                                 random_id)
from tritium.entrypoints.openai.serving_engine import (OpenAIServing, PromptRun, collect_finals,
                                                       guided_fields_given, sse_events, usage_of)
from tritium.entrypoints.openai.tool_calls import ToolPlan, plan_tools, template_message, tool_reply
from tritium.outputs import PositionLogprobs
from tritium.structured_output import GuidedDecodingParams


@dataclass
class ChoiceStream:
    """A streamed tool-calling choice's progress."""

    sent: int = 0  # "auto": characters sent as content; "named": argument pieces sent
    in_call: bool = False  # "auto": a tool call has started, nothing more goes out as content


class OpenAIServingChat(OpenAIServing):
    def __init__(self, *args, tool_call_parser: Optional[str] = None):
        super().__init__(*args)
        self.tool_call_parser = tool_call_parser  # the server's --tool-call-parser: what tool_choice "auto" needs

    def render(self, messages: list[ChatMessage], add_generation_prompt: bool = True,
               tools: Optional[list[dict]] = None) -> str:
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
            turn = {"role": message.role, "content": content or ""}
            turn.update({k: v for k, v in (("name", message.name), ("tool_calls", message.tool_calls),
                                           ("tool_call_id", message.tool_call_id)) if v is not None})
            conversation.append(template_message(turn))
        try:
            return self.llm.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt,
                                                tools=tools)
        except (ValueError, TypeError, KeyError, jinja2.TemplateError) as e:  # e.g. tool_calls it cannot iterate
            raise bad_request(f"the chat template cannot render these messages: {e}", "messages") from None

    def guided_decoding(self, request: ChatCompletionRequest, tools: ToolPlan) -> Optional[GuidedDecodingParams]:
        """The one guide of a request: its tool calls', response_format's, or vLLM's guided_* field's."""
        fmt = request.response_format
        formatted = fmt is not None and fmt.type != "text"
        given = guided_fields_given(request)
        if tools.mode != "none" and formatted:
            raise bad_request("response_format cannot be combined with tool calls", "response_format")
        if given and (formatted or tools.mode != "none"):  # refused before any guide is compiled
            raise bad_request(f"{given[0]} cannot be combined with response_format or tool calls", given[0])
        if tools.schema is not None:
            return self.check_guided(GuidedDecodingParams(json=tools.schema), "tools")
        if given or not formatted:
            return self.extra_guided(request)
        if fmt.type == "json_object":
            return self.check_guided(GuidedDecodingParams(json_object=True), "response_format")
        if fmt.json_schema is None:
            raise bad_request("response_format type json_schema needs a json_schema object", "response_format")
        return self.check_guided(GuidedDecodingParams(json=fmt.json_schema.schema_), "response_format")

    async def create(self, request: ChatCompletionRequest, raw_request):
        self.check_model(request.model)
        tools = plan_tools(request.tools, request.tool_choice, self.tool_call_parser, request.parallel_tool_calls)
        if request.top_logprobs is not None and not request.logprobs:
            raise bad_request("top_logprobs needs logprobs=true", "top_logprobs")
        if tools.mode != "none" and request.stream and request.logprobs:
            raise bad_request("logprobs are not streamed with tool calls (ask without stream)", "logprobs")
        prompt = self.tokenize(self.render(request.messages, request.add_generation_prompt, tools.tools), "messages")
        length_param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        max_tokens = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
        self.check_length(prompt, max_tokens, length_param)
        keep_special = {"skip_special_tokens": False} if tools.parser and tools.parser.keeps_special_tokens else {}
        params = self.sampling_params(request, max_tokens,
                                      logprobs=(request.top_logprobs or 0) if request.logprobs else None,
                                      guided_decoding=self.guided_decoding(request, tools), **keep_special)
        runs = [PromptRun(0, prompt)]
        self.submit(runs, params)
        if request.stream:
            return StreamingResponse(sse_events(self._stream(runs, raw_request, request, tools)),
                                     media_type="text/event-stream")
        final = (await collect_finals(self, runs, raw_request))[0]
        choices = []
        for c in final.outputs:
            content, calls, reason = (tool_reply(tools, c.text, c.finish_reason) if tools.mode != "none"
                                      else (c.text, None, c.finish_reason))
            choices.append(ChatChoice(index=c.index, message=ChatResponseMessage(content=content, tool_calls=calls),
                                      logprobs=self._logprobs(c.token_ids, c.logprobs, request),
                                      finish_reason=reason, stop_reason=c.stop_reason))
        return JSONResponse(ChatCompletionResponse(model=self.model_name, choices=choices,
                                                   usage=usage_of([final])).model_dump())

    async def _stream(self, runs, raw_request, request: ChatCompletionRequest, tools: ToolPlan):
        response_id, created = random_id("chatcmpl"), int(time.time())
        options = request.stream_options

        def chunk(choices, usage=None) -> str:
            return ChatCompletionChunk(id=response_id, created=created, model=self.model_name, choices=choices,
                                       usage=usage).model_dump_json()

        for i in range(request.n):  # one choice per chunk, as OpenAI sends them
            yield chunk([ChatStreamChoice(index=i, delta=DeltaMessage(role="assistant", content=""))])
        streams = [ChoiceStream() for _ in range(request.n)]
        final = None
        async for _, out in self.outputs(runs, raw_request):
            final = out
            choices = []
            for c in out.outputs:
                new = len(c.token_ids_diff)
                if not (c.text_diff or c.finished):
                    continue
                if tools.mode == "auto":  # content until a tool call starts; the calls once complete
                    choices.extend(self._auto_chunks(c, tools, streams[c.index]))
                    continue
                if tools.mode == "named":  # the reply is the arguments: streamed as OpenAI streams them
                    choices.append(self._named_chunk(c, tools, streams[c.index]))
                    continue
                if tools.mode != "none":  # the calls go out whole once their JSON is complete
                    if c.finished:
                        choices.append(self._tool_chunk(c, tools, 0))
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

    @staticmethod
    def _named_chunk(c, tools: ToolPlan, stream: ChoiceStream) -> ChatStreamChoice:
        """A forced function's arguments as they are generated: the first piece carries the call's
        id and name; it ends with the engine's finish reason, as OpenAI ends a forced call."""
        call = DeltaToolCall(index=0, function=DeltaFunctionCall(arguments=c.text_diff))
        if stream.sent == 0:
            call.id, call.type, call.function.name = random_id("call"), "function", tools.name
        stream.sent += 1
        return ChatStreamChoice(index=c.index, delta=DeltaMessage(tool_calls=[call]),
                                finish_reason=c.finish_reason if c.finished else None, stop_reason=c.stop_reason)

    @staticmethod
    def _tool_chunk(c, tools: ToolPlan, sent: int) -> ChatStreamChoice:
        """The last chunk of a tool-calling choice, `sent` characters of its text already sent as
        content: its calls, or the rest of its text when it holds none."""
        _, calls, reason = tool_reply(tools, c.text, c.finish_reason)
        if calls is None:
            return ChatStreamChoice(index=c.index, delta=DeltaMessage(content=c.text[sent:]),
                                    finish_reason=reason, stop_reason=c.stop_reason)
        deltas = [DeltaToolCall(index=i, id=call.id, type=call.type,
                                function=DeltaFunctionCall(name=call.function.name, arguments=call.function.arguments))
                  for i, call in enumerate(calls)]
        return ChatStreamChoice(index=c.index, delta=DeltaMessage(tool_calls=deltas),
                                finish_reason=reason, stop_reason=c.stop_reason)

    def _auto_chunks(self, c, tools: ToolPlan, stream: ChoiceStream) -> list[ChatStreamChoice]:
        """tool_choice "auto": the text before any tool call as content (holding back what could be
        the start of one), then at the end the calls the parser finds (or the rest as content).
        A marker cannot start in text already sent, so each token searches only the new text."""
        out = []
        if not stream.in_call:
            parser = tools.parser
            start = parser.call_start(c.text, stream.sent)
            safe = start if start is not None else len(c.text) - parser.held_back(c.text)
            if safe > stream.sent:
                out.append(ChatStreamChoice(index=c.index, delta=DeltaMessage(content=c.text[stream.sent:safe])))
                stream.sent = safe
            stream.in_call = start is not None
        if c.finished:
            out.append(self._tool_chunk(c, tools, stream.sent))
        return out

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
