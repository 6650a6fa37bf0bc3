"""One request's beam search: which beams continue, which sequences are finished, when to stop.

The algorithm is Hugging Face transformers' (`generate(num_beams=W, do_sample=False)`), with
TensorRT-LLM's knobs and defaults (length_penalty 0, early_stopping 1, diversity rate, per-step
widths). Each step every running beam b contributes its K most likely next tokens (computed on
the device; K = max(2, 1 + number of end tokens) * W, enough for the global top K):

    candidates   all (b, token) ranked by  score[b] + logprob  (+ diversity_rate * b)
    finished     those ranked in the top W that end the sequence (an end token, or the length
                 limit), scored (score[b] + logprob) / generated_length ** length_penalty, kept
                 if among the W best finished so far
    running      the W best that do not end it (beams are reordered best first)
    stop         early_stopping 1: W finished; 0: no running beam can beat the worst finished
                 at its current length; "never": ... at the longest length it could reach; or
                 every candidate ended its sequence

The beams themselves are Requests (the first is the request the user submitted); BeamSearch
only decides, the scheduler moves tokens and KV blocks accordingly (see Scheduler).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from tritium.core.request import Request
from tritium.core.sched_output import BeamCandidates, TopLogprobs


@dataclass
class BeamHypothesis:
    """A finished sequence."""

    score: float  # cumulative_logprob / len(token_ids) ** length_penalty
    token_ids: list[int]
    cumulative_logprob: float
    finish_reason: str  # "stop" (an end token) | "length"
    stop_reason: Optional[int] = None  # the stop_token_ids entry that ended it
    logprobs: list[TopLogprobs] = field(default_factory=list)  # per token, when asked for
    generation_logits: list[Any] = field(default_factory=list)  # per token [V] tensors, when asked for


@dataclass
class _History:
    """What a running beam carries besides its tokens (copied to its children)."""

    logprobs: list[TopLogprobs] = field(default_factory=list)
    generation_logits: list[Any] = field(default_factory=list)


@dataclass
class Selection:
    """A step's decision: the next running beams (parents index the current beams)."""

    parents: list[int]
    tokens: list[int]
    done: bool


class BeamSearch:
    def __init__(self, root: Request, max_model_len: int):
        params = root.sampling_params
        self.root = root
        self.beams: list[Request] = [root]  # running beams, best first
        self.scores: list[float] = [0.0]  # their cumulative log-probabilities
        self.histories: list[_History] = [_History()]
        self.finished: list[BeamHypothesis] = []  # at most `width`, best first
        self.length_penalty = 0.0 if params.length_penalty is None else float(params.length_penalty)
        es = 1 if params.early_stopping is None else params.early_stopping
        self.early_stopping = True if es in (True, 1) else False if es in (False, 0) else "never"
        self.diversity_rate = params.beam_search_diversity_rate or 0.0
        self.widths = list(params.beam_width_array or [params.beam_width])
        self.width = self.widths[-1]  # finished sequences kept (and returned from)
        self.end_ids = root.eos_token_ids | root.stop_token_ids
        self.max_tokens = params.max_tokens
        self.max_model_len = max_model_len
        self.num_logprobs = params.logprobs
        self.improvable = True  # HF's is_early_stop_heuristic_unsatisfied
        self.num_steps = 0
        # The runner holds the beams' old contents after a selection: resend them in full.
        self.resend = False

    # ---- what the runner needs ------------------------------------------------------------
    def width_at(self, step: int) -> int:
        return self.widths[min(step, len(self.widths) - 1)]

    @property
    def num_candidates(self) -> int:
        """Tokens each beam row must report this step (at least the logprobs asked for)."""
        k = max(2, 1 + len(self.end_ids)) * self.width_at(self.num_steps)
        return max(k, (self.num_logprobs or 0))

    # ---- one step -------------------------------------------------------------------------
    def step(self, candidates: Sequence[BeamCandidates], generation_logits: Optional[Sequence[Any]] = None
             ) -> Selection:
        """candidates[b]: beam b's next tokens. Updates finished sequences, scores and histories;
        returns the running beams' parents and tokens (the caller rebuilds the beams)."""
        width = self.width_at(self.num_steps)
        num_kept = max(2, 1 + len(self.end_ids)) * width
        generated = self.root.num_output_tokens + 1  # tokens each candidate sequence would have
        at_length_limit = ((self.max_tokens is not None and generated >= self.max_tokens)
                           or self.root.num_prompt_tokens + generated >= self.max_model_len)
        ranked = sorted(((self.scores[b] + lp + self.diversity_rate * b, self.scores[b] + lp, b, rank, token)
                         for b, cands in enumerate(candidates)
                         for rank, (token, lp) in enumerate(zip(cands.token_ids, cands.logprobs))),
                        key=lambda c: -c[0])[:num_kept]

        parents, tokens, scores, histories = [], [], [], []
        new_finished = []
        for i, (_, total, b, rank, token) in enumerate(ranked):
            ends = at_length_limit or token in self.end_ids
            if ends:
                if i < width:  # only the top `width` may finish (the rest is spare for running beams)
                    new_finished.append((total, b, rank, token))
            elif len(parents) < width:
                parents.append(b)
                tokens.append(token)
                scores.append(total)
                histories.append(self._child_history(b, rank, token, candidates, generation_logits))
        self._add_finished(new_finished, generated, candidates, generation_logits)

        self.num_steps += 1
        all_ended = len(parents) == 0
        if not all_ended:
            self._update_improvable(scores[0], generated)
        done = (all_ended or not self.improvable
                or (self.early_stopping is True and len(self.finished) == self.width))
        self.scores, self.histories = scores, histories
        return Selection(parents=parents, tokens=tokens, done=done)

    def _add_finished(self, new_finished: list, generated: int, candidates, generation_logits) -> None:
        if not new_finished or not self.improvable:
            return
        if self.early_stopping is True and len(self.finished) == self.width:
            return
        for total, b, rank, token in new_finished:
            history = self._child_history(b, rank, token, candidates, generation_logits)
            beam = self.beams[b]
            reason, stop_reason = "length", None
            if token in self.end_ids:
                reason = "stop"
                stop_reason = token if token not in self.root.eos_token_ids else None
            self.finished.append(BeamHypothesis(
                score=total / generated ** self.length_penalty, token_ids=beam.output_token_ids + [token],
                cumulative_logprob=total, finish_reason=reason, stop_reason=stop_reason,
                logprobs=history.logprobs, generation_logits=history.generation_logits))
        self.finished.sort(key=lambda h: -h.score)
        del self.finished[self.width:]

    def _update_improvable(self, best_running: float, generated: int) -> None:
        """HF's early-stop heuristic: can the best running beam still beat the worst finished one?"""
        if len(self.finished) < self.width:
            return  # an open slot: anything improves
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            longest = self.max_model_len - self.root.num_prompt_tokens
            if self.max_tokens is not None:
                longest = min(longest, self.max_tokens)
        else:
            longest = generated
        best_possible = best_running / longest ** self.length_penalty
        self.improvable = best_possible > self.finished[-1].score

    def _child_history(self, b: int, rank: int, token: int, candidates, generation_logits) -> _History:
        parent = self.histories[b]
        history = _History(logprobs=parent.logprobs, generation_logits=parent.generation_logits)
        if self.num_logprobs is not None:
            cands = candidates[b]
            k = self.num_logprobs
            entry = TopLogprobs(token_ids=[token] + cands.token_ids[:k],
                                logprobs=[cands.logprobs[rank]] + cands.logprobs[:k],
                                ranks=[rank + 1] + list(range(1, k + 1)))
            history = _History(logprobs=parent.logprobs + [entry], generation_logits=history.generation_logits)
        if generation_logits is not None:
            history.generation_logits = parent.generation_logits + [generation_logits[b]]
        return history

    # ---- results --------------------------------------------------------------------------
    def best(self, n: int) -> list[BeamHypothesis]:
        return self.finished[:n]
