"""SamplingMetadata: the per-step, per-row sampling tensors, built once on the host.

One row per request that samples this step. Tensors exist only for features some row uses
(None otherwise), so an all-greedy, penalty-free batch costs nothing but an argmax.
All host->device copies go through pinned memory with non_blocking=True: building the
metadata never waits for the GPU.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Optional, Union

import numpy as np
import torch

from tritium.layers.logits_processors import LogitsExtras
from tritium.sampling_params import SamplingParams


def to_device(data, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Copy host data (lists or an ndarray) to `device` without a stream sync (pinned memory and
    non_blocking on CUDA). numpy parses Python lists several times faster than torch.tensor."""
    t = torch.from_numpy(np.asarray(data, dtype=_NUMPY_DTYPES[dtype]))
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


_NUMPY_DTYPES = {torch.float32: np.float32, torch.long: np.int64}


@dataclass
class SamplingMetadata:
    num_rows: int
    vocab_size: int
    all_greedy: bool
    all_random: bool
    greedy_mask: Optional[torch.Tensor]  # [N] bool; None when all_greedy or all_random
    temperature: Optional[torch.Tensor]  # [N] float32 (1.0 on greedy rows); None when all_greedy
    # Filters; each None when no row uses it.
    top_k: Optional[torch.Tensor]  # [N] long, vocab_size where off
    max_top_k: Optional[int]  # host copy of the largest k < vocab_size, for a partial topk
    top_p: Optional[torch.Tensor]  # [N] float32, 1.0 where off
    min_p: Optional[torch.Tensor]  # [N] float32, 0.0 where off
    # Penalties; all None when no row uses any.
    repetition_penalty: Optional[torch.Tensor]  # [N] float32
    presence_penalty: Optional[torch.Tensor]  # [N] float32
    frequency_penalty: Optional[torch.Tensor]  # [N] float32
    prompt_mask: Optional[torch.Tensor]  # [N, V] bool: token occurs in the prompt
    output_counts: Optional[torch.Tensor]  # [N, V] float32: occurrences in the output so far
    # min_tokens: (row, token) pairs whose logit is forced to -inf this step; None when none.
    min_tokens_rows: Optional[torch.Tensor]  # [M] long
    min_tokens_cols: Optional[torch.Tensor]  # [M] long
    # Randomness: per-row (seed, num output tokens); seed None -> the sampler's own generator.
    seeds: list[Optional[int]]
    num_output_tokens: list[int]
    # Logprobs: per-row k (None: not asked); max_num_logprobs is None when no row asks.
    num_logprobs: list[Optional[int]]
    max_num_logprobs: Optional[int]
    # Guided decoding: bit t of row i is 1 where token t is allowed; None when no row is guided.
    token_bitmask: Optional[torch.Tensor] = None  # [N, ceil(V / 32)] int32
    # User processors, embedding_bias, bad words, n-gram bans (layers/logits_processors.py); set
    # by the runner only for steps where some row uses one.
    logits_extras: Optional["LogitsExtras"] = None

    @property
    def no_top_k(self) -> bool:
        return self.top_k is None

    @property
    def no_penalties(self) -> bool:
        return self.repetition_penalty is None

    @staticmethod
    def build(params: list[SamplingParams], prompt_token_ids: list[list[int]],
              output_token_ids: list[list[int]], device: torch.device, vocab_size: int,
              eos_token_ids: Union[None, Collection[int], Sequence[Collection[int]]] = None,
              num_output_tokens: Optional[list[int]] = None) -> "SamplingMetadata":
        """eos_token_ids: the EOS ids that min_tokens blocks besides each row's stop_token_ids
        (skipped for rows with ignore_eos): one collection for all rows (the model's EOS ids),
        or one per row. num_output_tokens: each row's output length when the token lists hold
        only what penalties need (empty lists for rows without penalties); default: their lengths."""
        n = len(params)
        assert len(prompt_token_ids) == n and len(output_token_ids) == n
        if num_output_tokens is None:
            num_output_tokens = [len(o) for o in output_token_ids]
        device = torch.device(device)
        greedy = [p.is_greedy for p in params]
        all_greedy, all_random = all(greedy), not any(greedy)

        # Scalars: one host list -> one transfer, sliced into per-feature rows on the device.
        rows: dict[str, list[float]] = {}
        top_ks: list[int] = []
        if not all_greedy:
            rows["temperature"] = [1.0 if g else p.temperature for p, g in zip(params, greedy)]
            # Filters only matter on random rows.
            top_ks = [min(p.top_k, vocab_size) for p, g in zip(params, greedy)
                      if p.top_k > 0 and not g]
            if top_ks:
                rows["top_k"] = [float(min(p.top_k, vocab_size) if p.top_k > 0 else vocab_size)
                                 for p in params]
            if any(p.top_p < 1.0 and not g for p, g in zip(params, greedy)):
                rows["top_p"] = [p.top_p for p in params]
            if any(p.min_p > 0.0 and not g for p, g in zip(params, greedy)):
                rows["min_p"] = [p.min_p for p in params]
        pen_rows = [i for i, p in enumerate(params) if p.needs_penalties]
        if pen_rows:
            rows["repetition_penalty"] = [p.repetition_penalty for p in params]
            rows["presence_penalty"] = [p.presence_penalty for p in params]
            rows["frequency_penalty"] = [p.frequency_penalty for p in params]
        if not all_greedy and not all_random:
            rows["greedy"] = [float(g) for g in greedy]
        t: dict[str, torch.Tensor] = {}
        if rows:
            packed = to_device(list(rows.values()), torch.float32, device)  # [F, N]
            t = dict(zip(rows.keys(), packed.unbind(0)))

        prompt_mask = output_counts = None
        if pen_rows:
            prompt_mask, output_counts = _token_tensors(
                pen_rows, prompt_token_ids, output_token_ids, n, vocab_size, device)

        mt_rows, mt_cols = [], []
        row_eos = _per_row_eos(eos_token_ids, n)
        for i, p in enumerate(params):
            if num_output_tokens[i] < p.min_tokens:
                blocked = set(p.stop_token_ids or ())
                if not p.ignore_eos:
                    blocked |= row_eos[i]
                blocked = sorted(tok for tok in blocked if tok < vocab_size)
                mt_rows += [i] * len(blocked)
                mt_cols += blocked
        min_tokens_rows = min_tokens_cols = None
        if mt_rows:
            idx = to_device([mt_rows, mt_cols], torch.long, device)  # [2, M]
            min_tokens_rows, min_tokens_cols = idx[0], idx[1]

        num_logprobs = [p.logprobs for p in params]
        asked = [k for k in num_logprobs if k is not None]
        return SamplingMetadata(
            num_rows=n, vocab_size=vocab_size, all_greedy=all_greedy, all_random=all_random,
            greedy_mask=t["greedy"].bool() if "greedy" in t else None,
            temperature=t.get("temperature"),
            top_k=t["top_k"].long() if "top_k" in t else None,
            max_top_k=max(top_ks) if top_ks else None,
            top_p=t.get("top_p"), min_p=t.get("min_p"),
            repetition_penalty=t.get("repetition_penalty"),
            presence_penalty=t.get("presence_penalty"),
            frequency_penalty=t.get("frequency_penalty"),
            prompt_mask=prompt_mask, output_counts=output_counts,
            min_tokens_rows=min_tokens_rows, min_tokens_cols=min_tokens_cols,
            seeds=[p.seed for p in params],
            num_output_tokens=num_output_tokens,
            num_logprobs=num_logprobs, max_num_logprobs=max(asked) if asked else None)


def _per_row_eos(eos_token_ids, n: int) -> list[set[int]]:
    if not eos_token_ids:
        return [set()] * n
    first = next(iter(eos_token_ids))
    if isinstance(first, int):  # one collection shared by every row
        return [set(eos_token_ids)] * n
    assert len(eos_token_ids) == n, "eos_token_ids: one collection per row, or one for all"
    return [set(e) for e in eos_token_ids]


def _token_tensors(pen_rows: list[int], prompt_token_ids: list[list[int]],
                   output_token_ids: list[list[int]], n: int, vocab_size: int,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt-occurrence mask and output counts, [N, V] each; only penalised rows are filled."""
    prompts = [prompt_token_ids[i] for i in pen_rows]
    outputs = [output_token_ids[i] for i in pen_rows]
    lens = [len(t) for t in prompts] + [len(t) for t in outputs]
    rows = np.repeat(np.array(pen_rows + pen_rows, dtype=np.int64), lens)  # [P + O]
    cols = np.fromiter(chain(chain.from_iterable(prompts), chain.from_iterable(outputs)),
                       dtype=np.int64, count=len(rows))  # [P + O]
    idx = to_device(np.stack([rows, cols]), torch.long, device)  # [2, P + O]
    num_p = sum(lens[:len(pen_rows)])
    prompt_mask = torch.zeros(n, vocab_size, dtype=torch.bool, device=device)  # [N, V]
    # index_put_ with device-side values: `mask[r, c] = True` would copy a host scalar (a sync).
    prompt_mask.index_put_((idx[0, :num_p], idx[1, :num_p]),
                           torch.ones(num_p, dtype=torch.bool, device=device))
    output_counts = torch.zeros(n, vocab_size, dtype=torch.float32, device=device)  # [N, V]
    ones = torch.ones(len(rows) - num_p, dtype=torch.float32, device=device)
    output_counts.index_put_((idx[0, num_p:], idx[1, num_p:]), ones, accumulate=True)
    return prompt_mask, output_counts
