"""Turns the engine's token-id outputs into RequestOutput: text, stop strings, logprobs, n / best_of.

Runs on the engine thread right after each step, so a stop string aborts its request before
the next step. Each user request (the parent) owns `best_of` engine requests (children)
with ids "<request_id>" (best_of == 1) or "<request_id>#<i>".
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from tritium.core.sched_output import EngineCoreOutput, TopLogprobs
from tritium.llm.detokenizer import IncrementalDetokenizer, rust_decoder
from tritium.llm.stop_checker import StopStringChecker
from tritium.outputs import CompletionOutput, Logprob, PositionLogprobs, RequestOutput, RequestPerfMetrics
from tritium.sampling_params import SamplingParams

# Receives a snapshot of the parent request (or an exception if the engine failed it).
Sink = Callable[[object], None]


def child_request_ids(request_id: str, best_of: int) -> list[str]:
    return [request_id] if best_of == 1 else [f"{request_id}#{i}" for i in range(best_of)]


@dataclass
class _Child:
    index: int
    detokenizer: Optional[IncrementalDetokenizer]
    stop_checker: Optional[StopStringChecker]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: Optional[list[PositionLogprobs]] = None
    cumulative_logprob: Optional[float] = None
    finish_reason: Optional[str] = None
    stop_reason: object = None
    sent_text_len: int = 0
    sent_num_tokens: int = 0
    token_times: Optional[list[float]] = None  # perf_counter per token, if perf metrics are asked for
    generation_logits: Optional[list[torch.Tensor]] = None  # [k, V] per step, if asked for


@dataclass
class _Parent:
    request_id: str
    prompt: Optional[str]
    prompt_token_ids: list[int]
    params: SamplingParams
    children: dict[str, _Child]
    sink: Sink
    streaming: bool
    prompt_logprobs: Optional[list[Optional[PositionLogprobs]]] = None
    num_cached_tokens: int = 0
    arrival_time: float = 0.0
    context_logits: Optional[list[torch.Tensor]] = None  # [n, V] per prompt chunk, if asked for
    beam_hypotheses: Optional[list] = None  # beam search: the n best finished sequences, at the end
    # exclude_input_from_output=False: the prompt in front of every completion.
    output_prefix_ids: list[int] = field(default_factory=list)
    output_prefix_text: str = ""

    @property
    def finished(self) -> bool:
        return all(c.finish_reason is not None for c in self.children.values())


class OutputProcessor:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._fast_decoder = rust_decoder(tokenizer) if tokenizer is not None else None  # looked up once
        self._parents: dict[str, _Parent] = {}
        self._parent_of: dict[str, str] = {}  # child req id -> parent request id

    def add_request(self, request_id: str, prompt: Optional[str], prompt_token_ids: list[int],
                    params: SamplingParams, sink: Sink, streaming: bool) -> list[str]:
        """Register a user request; returns the engine request ids of its children."""
        ids = child_request_ids(request_id, 1 if params.use_beam_search else params.best_of)
        children = {}
        for i, cid in enumerate(ids):
            detok = self._detokenizer(prompt_token_ids, params)
            stop = (StopStringChecker(params.stop_strings, params.include_stop_str_in_output)
                    if params.stop_strings and detok is not None else None)
            children[cid] = _Child(index=i, detokenizer=detok, stop_checker=stop,
                                   logprobs=[] if params.logprobs is not None else None,
                                   token_times=[] if params.return_perf_metrics else None,
                                   generation_logits=[] if params.return_generation_logits else None)
            self._parent_of[cid] = request_id
        parent = _Parent(
            request_id=request_id, prompt=prompt, prompt_token_ids=list(prompt_token_ids), params=params,
            children=children, sink=sink, streaming=streaming,
            prompt_logprobs=[None] if params.prompt_logprobs is not None else None,
            arrival_time=time.perf_counter(),
            context_logits=[] if params.return_context_logits else None)
        if not params.exclude_input_from_output:
            parent.output_prefix_ids = list(prompt_token_ids)
            if self.tokenizer is not None and params.detokenize:
                parent.output_prefix_text = self.tokenizer.decode(prompt_token_ids,
                                                                  skip_special_tokens=params.skip_special_tokens)
        self._parents[request_id] = parent
        return ids

    def _detokenizer(self, prompt_token_ids: list[int], params: SamplingParams) -> Optional[IncrementalDetokenizer]:
        if self.tokenizer is None or not params.detokenize:
            return None
        return IncrementalDetokenizer(self.tokenizer, prompt_token_ids, params.skip_special_tokens,
                                      params.spaces_between_special_tokens, fast_decoder=self._fast_decoder)

    def discard(self, request_id: str) -> None:
        """Forget a request the engine never took (its submission failed)."""
        parent = self._parents.pop(request_id, None)
        for cid in parent.children if parent is not None else ():
            self._parent_of.pop(cid, None)

    def child_ids(self, request_id: str) -> list[str]:
        parent = self._parents.get(request_id)
        return list(parent.children) if parent else []

    # ---- per step -------------------------------------------------------------------------
    def process_outputs(self, outputs: list[EngineCoreOutput]) -> list[str]:
        """Apply one step's outputs; send snapshots; return child ids to abort (stop strings)."""
        now = time.perf_counter()  # when this step's tokens reached the front
        to_abort: list[str] = []
        touched: dict[str, _Parent] = {}
        for out in outputs:
            parent_id = self._parent_of.get(out.req_id)
            if parent_id is None:
                continue  # already finished (e.g. the abort that follows a stop string)
            parent = self._parents[parent_id]
            child = parent.children[out.req_id]
            if child.finish_reason is not None:
                continue
            parent.num_cached_tokens = max(parent.num_cached_tokens, out.num_cached_tokens)
            if out.new_prompt_logprobs and parent.prompt_logprobs is not None and child.index == 0:
                parent.prompt_logprobs.extend(self._convert_logprobs(tl) for tl in out.new_prompt_logprobs)
            if child.token_times is not None:  # a beam search's k-th token is known after its k-th step
                child.token_times.extend([now] * (1 if out.beam_step else len(out.new_token_ids)))
            if out.new_context_logits is not None and parent.context_logits is not None and child.index == 0:
                parent.context_logits.append(out.new_context_logits)
            if out.new_generation_logits is not None and child.generation_logits is not None:
                child.generation_logits.append(out.new_generation_logits)
            if out.beam_hypotheses is not None:
                parent.beam_hypotheses = out.beam_hypotheses
            if self._apply_tokens(parent, child, out):
                to_abort.append(out.req_id)
            touched[parent_id] = parent
        for parent in touched.values():
            self._deliver(parent)
        return to_abort

    def fail(self, child_ids: list[str], exc: BaseException) -> None:
        """The engine failed these requests: hand the error to each parent once."""
        for parent_id in {self._parent_of[c] for c in child_ids if c in self._parent_of}:
            parent = self._parents.pop(parent_id)
            for cid in parent.children:
                self._parent_of.pop(cid, None)
            parent.sink(exc)

    def _apply_tokens(self, parent: _Parent, child: _Child, out: EngineCoreOutput) -> bool:
        """Returns True when a stop string ended the child (its engine request must be aborted)."""
        child.token_ids.extend(out.new_token_ids)
        for tl in out.new_logprobs:
            child.cumulative_logprob = (child.cumulative_logprob or 0.0) + tl.logprobs[0]
            if child.logprobs is not None:
                child.logprobs.append(self._convert_logprobs(tl))
        if child.detokenizer is not None and out.new_token_ids:
            new_text = child.detokenizer.push(out.new_token_ids)
            child.text += new_text
            if child.stop_checker is not None:
                stop, truncated = child.stop_checker.check(child.text, len(new_text))
                if stop is not None:
                    child.text = truncated
                    child.finish_reason, child.stop_reason = "stop", stop
                    return True
        if out.finish_reason is not None:
            if child.detokenizer is not None:
                child.text += child.detokenizer.flush()
            child.finish_reason, child.stop_reason = out.finish_reason, out.stop_reason
        return False

    def _convert_logprobs(self, tl: TopLogprobs) -> PositionLogprobs:
        entries = {}
        for tid, lp, rank in zip(tl.token_ids, tl.logprobs, tl.ranks):
            if tid not in entries:
                decoded = self.tokenizer.decode([tid]) if self.tokenizer is not None else None
                entries[tid] = Logprob(logprob=lp, rank=rank, decoded_token=decoded)
        return entries

    # ---- snapshots ------------------------------------------------------------------------
    def _deliver(self, parent: _Parent) -> None:
        finished = parent.finished
        if not (parent.streaming or finished):
            return
        children = sorted(parent.children.values(), key=lambda c: c.index)
        if finished and parent.params.best_of > parent.params.n and not parent.params.use_beam_search:
            children = sorted(children, key=lambda c: -(c.cumulative_logprob or 0.0))[:parent.params.n]
        if parent.beam_hypotheses is not None:
            outputs = [self._beam_completion(parent, h, i) for i, h in enumerate(parent.beam_hypotheses)]
        else:
            outputs = [self._completion(parent, c, i, finished) for i, c in enumerate(children)]
        parent.sink(RequestOutput(
            request_id=parent.request_id, prompt=parent.prompt, prompt_token_ids=parent.prompt_token_ids,
            outputs=outputs, finished=finished, prompt_logprobs=parent.prompt_logprobs,
            num_cached_tokens=parent.num_cached_tokens,
            context_logits=_concat(parent.context_logits)))
        if finished:
            del self._parents[parent.request_id]
            for cid in parent.children:
                self._parent_of.pop(cid, None)

    def _beam_completion(self, parent: _Parent, hypothesis, index: int) -> CompletionOutput:
        """One of a beam search's finished sequences (it arrives whole, at the end)."""
        params = parent.params
        text = ""
        detok = self._detokenizer(parent.prompt_token_ids, params)
        if detok is not None:
            text = detok.push(hypothesis.token_ids) + detok.flush()
        token_ids = parent.output_prefix_ids + hypothesis.token_ids
        text = parent.output_prefix_text + text
        gen_logits = torch.stack(hypothesis.generation_logits) if hypothesis.generation_logits else None
        (child,) = parent.children.values()
        perf = (RequestPerfMetrics(parent.arrival_time, child.token_times[:len(hypothesis.token_ids)])
                if child.token_times is not None else None)
        return CompletionOutput(
            index=index, text=text, token_ids=token_ids,
            logprobs=([self._convert_logprobs(tl) for tl in hypothesis.logprobs]
                      if params.logprobs is not None else None),
            cumulative_logprob=hypothesis.cumulative_logprob, finish_reason=hypothesis.finish_reason,
            stop_reason=hypothesis.stop_reason, text_diff=text, token_ids_diff=token_ids,
            generation_logits=gen_logits, request_perf_metrics=perf)

    @staticmethod
    def _completion(parent: _Parent, child: _Child, index: int, finished: bool) -> CompletionOutput:
        text = child.text
        if child.finish_reason is None and child.stop_checker is not None:
            # Hold back a tail that may be the start of a stop string.
            text = text[:max(child.sent_text_len, child.stop_checker.streamable_len(len(text), final=False))]
        text = parent.output_prefix_text + text
        token_ids = parent.output_prefix_ids + child.token_ids
        out = CompletionOutput(
            index=index, text=text, token_ids=token_ids,
            logprobs=list(child.logprobs) if child.logprobs is not None else None,
            cumulative_logprob=child.cumulative_logprob, finish_reason=child.finish_reason,
            stop_reason=child.stop_reason, text_diff=text[child.sent_text_len:],
            token_ids_diff=token_ids[child.sent_num_tokens:], generation_logits=_concat(child.generation_logits))
        if finished and child.token_times is not None:
            out.request_perf_metrics = RequestPerfMetrics(parent.arrival_time, child.token_times)
        child.sent_text_len, child.sent_num_tokens = len(text), len(token_ids)
        return out


def _concat(chunks: Optional[list[torch.Tensor]]) -> Optional[torch.Tensor]:
    """[n1, V], [n2, V], ... -> [n1 + n2 + ..., V]; None when not asked for (or nothing yet)."""
    return torch.cat(chunks) if chunks else None
