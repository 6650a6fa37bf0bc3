"""How many KV cache blocks to allocate: honest memory planning, reported to the user.

GPU: after the weights are loaded and a profiling forward pass of max_num_tokens has measured
the activation peak (and one at the largest CUDA-graph batch has sized the graphs' memory pool),
take `free_gpu_memory_fraction` of the memory still free.
CPU: what max_batch_size requests of max_seq_len could ever use, within `cpu_memory_budget_gib`
(and `max_tokens`). The CPU cache is reserved, not filled: its pages come from an anonymous
mapping (zero-filled by the kernel) and become resident only once a block is written, so a
one-prompt run costs the memory of its own tokens, not the whole budget, and no start-up time.
"""
from __future__ import annotations

import logging
import math
import mmap
from dataclasses import dataclass
from typing import Optional

import torch

from tritium.config import CacheConfig, KvCacheConfig, ModelConfig, ResolvedSchedulerConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KvCachePlan:
    num_blocks: int
    block_size: int
    bytes_per_block: int
    budget_bytes: int
    reason: str

    @property
    def max_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def describe(self) -> str:
        gib = self.num_blocks * self.bytes_per_block / 2**30
        return (f"KV cache: {self.num_blocks} blocks x {self.block_size} tokens = {self.max_tokens} tokens "
                f"({gib:.2f} GiB; {self.reason})")


def allocate_kv_caches(model_config: ModelConfig, cache_config: CacheConfig, device: torch.device) -> list[torch.Tensor]:
    """One [2, num_blocks, block_size, num_kv_heads, head_dim] tensor per layer (k at 0, v at 1), zeros."""
    shape = (2, cache_config.num_blocks, cache_config.block_size,
             model_config.num_key_value_heads, model_config.head_dim)
    if device.type == "cpu":
        return [lazy_cpu_zeros(shape, cache_config.dtype) for _ in range(model_config.num_hidden_layers)]
    return [torch.zeros(shape, dtype=cache_config.dtype, device=device)
            for _ in range(model_config.num_hidden_layers)]


def lazy_cpu_zeros(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of zeros whose memory becomes resident only where it is written: the kernel
    zero-fills an anonymous mapping page by page on first touch (torch.zeros would write it all
    now). The tensor keeps the mapping alive."""
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    return torch.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype).view(shape)


def bytes_per_block(model_config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * model_config.num_hidden_layers * block_size * model_config.kv_size * elem


def plan_kv_cache(model_config: ModelConfig, sched: ResolvedSchedulerConfig, kv: KvCacheConfig,
                  dtype: torch.dtype, device: torch.device, activation_bytes: int = 0) -> KvCachePlan:
    """activation_bytes: the peak a step of max_num_tokens needs (GPU), kept free of cache."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        budget, reason = gpu_kv_budget(free, activation_bytes, kv.free_gpu_memory_fraction)
    else:
        budget = int(kv.cpu_memory_budget_gib * 2**30)
        reason = f"CPU budget {kv.cpu_memory_budget_gib:g} GiB, resident only as blocks are used"
    return plan_kv_blocks(model_config, sched, kv, dtype, budget, reason)


def gpu_kv_budget(free_bytes: int, activation_bytes: int, fraction: float) -> tuple[int, str]:
    """The KV cache's share of a GPU whose weights are loaded and `free_bytes` are left."""
    free = max(free_bytes - activation_bytes, 0)
    return int(free * fraction), (f"{fraction:.0%} of {free / 2**30:.1f} GiB free GPU memory after weights "
                                  f"and {activation_bytes / 2**30:.2f} GiB of activations")


def plan_kv_blocks(model_config: ModelConfig, sched: ResolvedSchedulerConfig, kv: KvCacheConfig, dtype: torch.dtype,
                   budget: int, reason: str) -> KvCachePlan:
    """As many blocks as `budget` bytes hold, capped by max_tokens and by what max_batch_size
    sequences of max_seq_len could ever use."""
    block_size = kv.tokens_per_block
    per_block = bytes_per_block(model_config, block_size, dtype)
    num_blocks = budget // per_block
    if kv.max_tokens is not None and kv.max_tokens < num_blocks * block_size:
        num_blocks = -(-kv.max_tokens // block_size)
        reason = f"max_tokens={kv.max_tokens}"
    useful = sched.max_num_seqs * sched.max_beam_width * -(-sched.max_model_len // block_size)
    if useful < num_blocks:
        num_blocks = useful
        reason = "all max_batch_size sequences at max_seq_len fit"
    if num_blocks < 1:
        raise ValueError(
            f"the KV cache budget ({budget / 2**20:.1f} MiB: {reason}) holds no block of {block_size} tokens "
            f"({per_block / 2**20:.2f} MiB each): raise free_gpu_memory_fraction / cpu_memory_budget_gib or max_tokens, "
            "or leave the cache more memory (quantized weights, a lower max_num_tokens)")
    return KvCachePlan(num_blocks=num_blocks, block_size=block_size, bytes_per_block=per_block,
                       budget_bytes=budget, reason=reason)


@torch.inference_mode()
def profile_step_lengths(num_tokens: int, max_model_len: int, max_num_seqs: int) -> list[int]:
    """Prompt lengths of the largest step the scheduler can make with num_tokens tokens: prompts of
    max_model_len (the longest attention) and one shorter remainder, at most max_num_seqs of them.
    A step is not bounded by one sequence: with max_seq_len 256 and max_num_tokens 8192, 32
    prompts share a step."""
    count = max(1, min(-(-num_tokens // max_model_len), max_num_seqs))
    total = min(num_tokens, count * max_model_len)
    full, rest = divmod(total, max_model_len)
    return [max_model_len] * full + ([rest] if rest else [])


def profile_activation_bytes(model, model_config: ModelConfig, sched: ResolvedSchedulerConfig, device: torch.device,
                             backend=None, num_tokens: Optional[int] = None) -> int:
    """Peak GPU memory of one forward pass of `num_tokens` tokens (default max_num_tokens; the
    largest prefill step, profile_step_lengths) plus the logits of up to max_batch_size rows,
    excluding the scratch KV cache it writes into."""
    from tritium.attention.backend import ForwardContext, forward_context
    from tritium.attention.torch_backend import TorchAttentionBackend
    from tritium.worker.input_batch import BlockTable, CachedRequestState, StagingBuffers, build_step_inputs
    from tritium.sampling_params import SamplingParams

    block_size = 16
    lengths = profile_step_lengths(num_tokens or sched.max_num_batched_tokens, sched.max_model_len, sched.max_num_seqs)
    blocks_per_seq = -(-max(lengths) // block_size)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    caches = allocate_kv_caches(model_config, CacheConfig(block_size, blocks_per_seq * len(lengths),
                                                          dtype=model_config.dtype), device)
    scratch = sum(c.numel() * c.element_size() for c in caches)
    table = BlockTable(len(lengths), blocks_per_seq)
    states = []
    for i, length in enumerate(lengths):
        first = i * blocks_per_seq
        state = CachedRequestState(req_id=f"profile-{i}", token_ids=[0] * length, num_prompt_tokens=length,
                                   sampling_params=SamplingParams(),
                                   block_ids=list(range(first, first + -(-length // block_size))),
                                   num_computed_tokens=0)
        state.row = table.add(state.block_ids)
        states.append(state)
    inputs = build_step_inputs(states, {s.req_id: len(s.token_ids) for s in states}, table, block_size,
                               StagingBuffers(device))
    ctx = ForwardContext(attn_metadata=inputs.attn_metadata, kv_caches=caches, backend=backend or TorchAttentionBackend())
    with forward_context(ctx):
        hidden = model(inputs.input_ids, inputs.positions)
    rows = min(sched.max_num_seqs, sum(lengths))
    model.compute_logits(hidden[:rows])
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base - scratch
    del caches, hidden, ctx, inputs
    torch.cuda.empty_cache()
    return max(int(peak), 0)


def memory_plan_summary(weights_bytes: int, plan: KvCachePlan, activation_bytes: int, graph_reserve_bytes: int,
                        max_model_len: int, profile_key: Optional[dict] = None) -> dict:
    """Where the device memory goes and what the KV cache holds (bytes; saved with an engine,
    printed by `tritium build` and its --dry-run, logged at start). profile_key: what the
    activation and graph figures were measured under (saved_profile)."""
    blocks_per_seq = -(-max_model_len // plan.block_size)
    summary = {"weights_bytes": weights_bytes, "activation_bytes": activation_bytes,
               "cuda_graph_bytes": graph_reserve_bytes, "kv_cache_bytes": plan.num_blocks * plan.bytes_per_block,
               "kv_cache_tokens": plan.max_tokens, "kv_bytes_per_token": plan.bytes_per_block // plan.block_size,
               "max_seq_len": max_model_len, "sequences_at_max_seq_len": plan.num_blocks // blocks_per_seq,
               "kv_plan_reason": plan.reason}
    if profile_key is not None:
        summary["profiled_under"] = profile_key
    return summary


# bumped when the profiling passes change, so that a saved engine's figures from older passes are
# measured again (2: a step of several prompts, not one capped at max_seq_len)
PROFILE_METHOD = 2


def profile_key(device: torch.device, sched, decode_graph_top: int, prefill_graph_sizes: list[int],
                use_graphs: bool) -> dict:
    """What the profiled activation and CUDA-graph peaks depend on, besides the model itself (a
    saved engine's weights are fixed): the GPU model, torch, the step limits and the graphs."""
    return {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__, "method": PROFILE_METHOD,
            "max_num_batched_tokens": sched.max_num_batched_tokens, "max_num_seqs": sched.max_num_seqs,
            "max_model_len": sched.max_model_len, "cuda_graphs": use_graphs,
            "decode_graph_top": decode_graph_top if use_graphs else 0, "prefill_graph_sizes": list(prefill_graph_sizes)}


def saved_profile(saved_plan: Optional[dict], key: dict) -> Optional[tuple[int, int]]:
    """(activation, CUDA-graph) bytes a saved engine measured under the same key, so that loading
    it need not run the profiling passes again (0.8 s of an 8B FP8 engine's load on an H200,
    measured before the prefill graphs); else None."""
    if not saved_plan or saved_plan.get("profiled_under") != key:
        return None
    return int(saved_plan["activation_bytes"]), int(saved_plan["cuda_graph_bytes"])


def weights_bytes(model) -> int:
    """The loaded model's parameters as stored (quantized layouts at their size; tied ones once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def describe_memory(summary: dict) -> str:
    """memory_plan_summary() as the table `tritium build` prints and the start-up log shows."""
    gib = 2**30
    rows = [("weights", summary["weights_bytes"]), ("activations (one step)", summary["activation_bytes"]),
            ("CUDA graph pool", summary["cuda_graph_bytes"]), ("KV cache", summary["kv_cache_bytes"])]
    lines = ["memory plan:"] + [f"  {name:<24} {value / gib:8.2f} GiB" for name, value in rows]
    lines.append(f"  KV cache capacity        {summary['kv_cache_tokens']} tokens "
                 f"({summary['kv_bytes_per_token']} bytes each; {summary['kv_plan_reason']})")
    lines.append(f"  sequences of {summary['max_seq_len']} tokens at once: {summary['sequences_at_max_seq_len']}")
    return "\n".join(lines)
