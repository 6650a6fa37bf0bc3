"""Sampler: one engine step's logits [N, V] -> one token per row, without a host sync.

Order (vLLM v1): logits extras (user processors, bias, bans: layers/logits_processors.py),
penalties and min_tokens on the raw logits -> greedy argmax; for random rows
temperature -> min_p -> top_k -> top_p -> softmax -> inverse-CDF draw in two levels
(sample_from_probs): picks token i with probability probs[i], like torch.multinomial but with no
device->host sync, from two uniforms per row (an exponential race would draw V random numbers per
row: 12.6 M per step at 256 rows of a 49k vocabulary, most of a CPU step's time).
Logprobs come from the RAW logits.

Reproducibility: a seeded row draws its uniforms from a generator seeded with
mix(seed, number of output tokens so far), so its token depends only on its own logits, its
seed and its position: not on the batch around it, nor on when it was (re)scheduled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from tritium.core.sched_output import TopLogprobs
from tritium.layers.logits_processors import apply_logits_extras
from tritium.layers.sampling_metadata import SamplingMetadata
from tritium.structured_output.bitmask import apply_token_bitmask_

_MASK64 = (1 << 64) - 1
SAMPLE_BLOCK = 256  # tokens per block of sample_from_probs' first level


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a fixed (unlike hash() across versions), well-spread 64-bit mix."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def row_seed(seed: int, step: int) -> int:
    """Generator seed for a seeded request's `step`-th output token (63 bits: manual_seed-safe)."""
    return _mix64(_mix64(seed & _MASK64) ^ step) >> 1


@dataclass
class SamplerOutput:
    sampled_token_ids: torch.Tensor  # [N] long, on the logits' device
    logprobs_tensors: Optional["LogprobsTensors"] = None  # on the device; None when no row asked
    num_logprobs: Optional[list[Optional[int]]] = None  # per row: top-k asked (None: not asked)

    @property
    def logprobs(self) -> Optional[list[Optional[TopLogprobs]]]:
        """Per-row TopLogprobs (one host copy: a device sync); None when no row asked."""
        if self.logprobs_tensors is None:
            return None
        return self.logprobs_tensors.tolists(self.num_logprobs)


class LogprobsTensors(NamedTuple):
    """Top-k logprobs still on the device; column 0 is the chosen token."""

    token_ids: torch.Tensor  # [N, k + 1] long
    logprobs: torch.Tensor  # [N, k + 1] float32
    ranks: torch.Tensor  # [N, k + 1] long, 1-based

    def to_host(self, non_blocking: bool = False) -> "LogprobsTensors":
        """Copies in pinned host memory (non_blocking: complete once the stream gets there)."""
        pin = self.token_ids.is_cuda
        return LogprobsTensors(*(t.to("cpu", non_blocking=non_blocking) if not pin else
                                 torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=non_blocking)
                                 for t in self))

    def tolists(self, num_per_row: list[Optional[int]]) -> list[Optional[TopLogprobs]]:
        """One host copy for the whole batch; row i keeps its first num_per_row[i] top entries."""
        ids, lps, ranks = self.token_ids.tolist(), self.logprobs.tolist(), self.ranks.tolist()
        return [None if k is None else TopLogprobs(ids[i][:k + 1], lps[i][:k + 1], ranks[i][:k + 1])
                for i, k in enumerate(num_per_row)]


def top_logprobs_tensors(logits: torch.Tensor, token_ids: torch.Tensor, k: int) -> LogprobsTensors:
    """log_softmax(logits) in float32 at token_ids, plus the top-k; ranks in the full distribution.

    A token's rank is 1 + the number of tokens strictly more likely (the argmax has rank 1).
    """
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # [N, V]
    chosen = logprobs.gather(-1, token_ids.view(-1, 1))  # [N, 1]
    chosen_rank = (logprobs > chosen).sum(-1, keepdim=True) + 1  # [N, 1]
    top_lp, top_ids = logprobs.topk(k, dim=-1)  # [N, k]
    top_ranks = torch.arange(1, k + 1, device=logits.device).expand_as(top_ids)  # [N, k]
    return LogprobsTensors(torch.cat([token_ids.view(-1, 1).long(), top_ids], 1),
                           torch.cat([chosen, top_lp], 1),
                           torch.cat([chosen_rank, top_ranks], 1))


def compute_top_logprobs(logits: torch.Tensor, token_ids: torch.Tensor,
                         k: int) -> list[TopLogprobs]:
    """Per row: TopLogprobs([token, top-k ids], [logprobs], [ranks]). Also for prompt_logprobs,
    with token_ids = the next prompt tokens. Syncs once to copy the result to the host."""
    return top_logprobs_tensors(logits, token_ids, k).tolists([k] * logits.shape[0])


def apply_penalties(logits: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
    """In place: repetition (prompt + output tokens), then frequency and presence (output)."""
    rep = meta.repetition_penalty.view(-1, 1)  # [N, 1]
    seen = meta.prompt_mask | (meta.output_counts > 0)  # [N, V]
    pen = torch.where(seen, rep, torch.ones_like(rep))  # [N, V]
    # Dividing a positive logit and multiplying a negative one both make the token less likely.
    logits.copy_(torch.where(logits > 0, logits / pen, logits * pen))
    logits -= meta.frequency_penalty.view(-1, 1) * meta.output_counts
    logits -= meta.presence_penalty.view(-1, 1) * (meta.output_counts > 0)
    return logits


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Drop tokens whose probability is below min_p * (the row's top probability)."""
    probs = torch.softmax(logits, dim=-1)  # [N, V]
    threshold = probs.amax(dim=-1, keepdim=True) * min_p.view(-1, 1)  # [N, 1]
    return logits.masked_fill(probs < threshold, float("-inf"))


def apply_top_k_top_p(logits: torch.Tensor, top_k: Optional[torch.Tensor],
                      top_p: Optional[torch.Tensor],
                      max_top_k: Optional[int] = None) -> torch.Tensor:
    """top_k keeps the k largest logits (ties at the k-th kept, like HF; k == V: off); top_p keeps
    the smallest set of most likely tokens whose mass reaches top_p, and always the top token.
    max_top_k (host int, the largest k < V of any row) lets top_k alone skip the full sort."""
    vocab = logits.shape[-1]
    if top_p is None and top_k is not None and max_top_k is not None and max_top_k < vocab:
        top = logits.topk(max_top_k, dim=-1).values  # [N, max_top_k] descending
        kth = top.gather(-1, (top_k.clamp(max=max_top_k) - 1).view(-1, 1))  # [N, 1]
        kth = kth.masked_fill(top_k.view(-1, 1) >= vocab, float("-inf"))  # rows with top_k off
        return logits.masked_fill(logits < kth, float("-inf"))
    sorted_logits, sorted_idx = logits.sort(dim=-1, descending=False)  # [N, V] ascending
    if top_k is not None:
        kth = sorted_logits.gather(-1, (vocab - top_k).view(-1, 1))  # [N, 1]
        sorted_logits = sorted_logits.masked_fill(sorted_logits < kth, float("-inf"))
    if top_p is not None:
        cum_probs = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)  # [N, V]
        drop = cum_probs <= 1 - top_p.view(-1, 1)  # [N, V]: the unlikely tail outside the nucleus
        drop[:, -1] = False  # always keep the top token
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, sorted_idx, sorted_logits)


def _search(cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index of the first cdf entry above u * total ([N, K], [N, 1] -> [N, 1]); the point is kept
    strictly below the total, which u < 1 can round up to."""
    total = cdf[:, -1:]
    point = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, point, right=True).clamp_(max=cdf.shape[1] - 1)  # in range even for a 0 row


def sample_from_probs(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row with probability probs[row, token] (rows need not sum to 1), on the device.

    Inverse CDF in two levels, so that only block sums and one block per row are accumulated (in
    float64): u0 picks a block of SAMPLE_BLOCK tokens with probability (block mass) / (row mass),
    u1 a token inside it with probability p / (block mass); the product is p / (row mass).
    searchsorted(right=True) at a point below the total never lands on a zero-probability token.
    probs: [N, V]; uniforms: [N, 2] in [0, 1) -> [N] long."""
    n, vocab = probs.shape
    pad = -vocab % SAMPLE_BLOCK
    blocks = (F.pad(probs, (0, pad)) if pad else probs).view(n, -1, SAMPLE_BLOCK)  # [N, B, S]
    block_cdf = blocks.sum(-1).double().cumsum(-1)  # [N, B]
    block = _search(block_cdf, uniforms[:, :1])  # [N, 1]
    inner = blocks.gather(1, block[:, :, None].expand(n, 1, SAMPLE_BLOCK)).view(n, SAMPLE_BLOCK)  # [N, S]
    token = _search(inner.double().cumsum(-1), uniforms[:, 1:])  # [N, 1]
    return (block * SAMPLE_BLOCK + token).view(n)


class Sampler:
    """Stateless across steps except for the generator that unseeded rows share."""

    def __init__(self, seed: Optional[int] = None):
        self._seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}
        self._row_generators: dict[torch.device, list[torch.Generator]] = {}

    def __call__(self, logits: torch.Tensor, meta: SamplingMetadata) -> SamplerOutput:
        raw = logits
        logits = self.process_logits(logits, meta)  # [N, V] float32
        if meta.all_greedy:
            sampled = logits.argmax(dim=-1)  # [N]
        else:
            sampled = self._sample_random(logits, meta)  # [N]
            if meta.greedy_mask is not None:
                sampled = torch.where(meta.greedy_mask, logits.argmax(dim=-1), sampled)

        if meta.max_num_logprobs is None:
            return SamplerOutput(sampled_token_ids=sampled)
        return SamplerOutput(sampled_token_ids=sampled,
                             logprobs_tensors=top_logprobs_tensors(raw, sampled, meta.max_num_logprobs),
                             num_logprobs=meta.num_logprobs)

    @staticmethod
    def process_logits(logits: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
        """Float32 logits [N, V] after the per-request changes that come before sampling (and
        before beam search's log-softmax): logits extras, penalties, min_tokens, the grammar's
        bitmask. The caller's tensor is left as it was (logprobs are computed from it)."""
        assert logits.shape == (meta.num_rows, meta.vocab_size), (logits.shape, meta.num_rows)
        raw = logits
        logits = logits.float()  # [N, V]
        if (not meta.no_penalties or meta.min_tokens_rows is not None or meta.logits_extras is not None
                or meta.token_bitmask is not None):
            logits = logits.clone() if logits is raw else logits  # keep the caller's raw logits
        if meta.logits_extras is not None:
            apply_logits_extras(logits, meta.logits_extras)
        if not meta.no_penalties:
            apply_penalties(logits, meta)
        if meta.min_tokens_rows is not None:
            blocked = torch.full_like(meta.min_tokens_rows, float("-inf"), dtype=logits.dtype)
            logits.index_put_((meta.min_tokens_rows, meta.min_tokens_cols), blocked)
        if meta.token_bitmask is not None:  # guided decoding: the tokens its grammar allows
            apply_token_bitmask_(logits, meta.token_bitmask)
        return logits

    def _sample_random(self, logits: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
        logits = logits / meta.temperature.view(-1, 1)  # [N, V]
        if meta.min_p is not None:
            logits = apply_min_p(logits, meta.min_p)
        if meta.top_k is not None or meta.top_p is not None:
            logits = apply_top_k_top_p(logits, meta.top_k, meta.top_p, meta.max_top_k)
        probs = torch.softmax(logits, dim=-1)  # [N, V]
        return sample_from_probs(probs, self._uniforms(probs.device, meta))  # [N]

    def _uniforms(self, device: torch.device, meta: SamplingMetadata) -> torch.Tensor:
        """[N, 2] float64 in [0, 1): the engine generator's for unseeded rows, each seeded row's
        from its own (seed, step) generator."""
        u = torch.empty(meta.num_rows, 2, dtype=torch.float64, device=device)
        if any(s is None for s in meta.seeds):
            u.uniform_(generator=self._engine_generator(device))
        row_gens = self._row_gens(device, sum(s is not None for s in meta.seeds))
        j = 0
        for i, (seed, step) in enumerate(zip(meta.seeds, meta.num_output_tokens)):
            if seed is not None:
                gen = row_gens[j]
                j += 1
                gen.manual_seed(row_seed(seed, step))  # host-side; no device sync
                u[i].uniform_(generator=gen)
        return u

    def _engine_generator(self, device: torch.device) -> torch.Generator:
        gen = self._generators.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            if self._seed is None:
                gen.seed()
            else:
                gen.manual_seed(self._seed)
            self._generators[device] = gen
        return gen

    def _row_gens(self, device: torch.device, count: int) -> list[torch.Generator]:
        """Reused generator objects (reseeded per use), so seeded rows allocate nothing per step."""
        gens = self._row_generators.setdefault(device, [])
        while len(gens) < count:
            gens.append(torch.Generator(device=device))
        return gens
