"""Model runner: turns a SchedulerOutput into one forward pass and sampled tokens.

Holds only what every model needs: per-request token/block state, the batch tensors, the KV
cache, the forward context, decode CUDA graphs and the sampler. Features live in helpers
(input_batch, cuda_graph, sampler).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from tritium.attention.backend import AttentionBackend, ForwardContext, forward_context
from tritium.config import CacheConfig, ModelConfig
from tritium.core.sched_output import ModelRunnerOutput, SchedulerOutput
from tritium.layers.sampler import Sampler, SamplingMetadata, compute_top_logprobs
from tritium.worker.cuda_graph import DecodeGraphs
from tritium.worker.input_batch import BlockTable, CachedRequestState, StagingBuffers, StepInputs, build_step_inputs
from tritium.worker.memory_plan import allocate_kv_caches


class ModelRunner:
    def __init__(self, model: nn.Module, model_config: ModelConfig, cache_config: CacheConfig,
                 device: torch.device, backend: AttentionBackend, max_num_seqs: int = 256,
                 max_model_len: Optional[int] = None, use_cuda_graphs: bool = False):
        self.model = model
        self.model_config = model_config
        self.cache_config = cache_config
        self.device = device
        self.backend = backend
        self.sampler = Sampler()
        self.requests: dict[str, CachedRequestState] = {}
        self.kv_caches = allocate_kv_caches(model_config, cache_config, device)
        max_model_len = max_model_len or cache_config.num_blocks * cache_config.block_size
        max_blocks = -(-max_model_len // cache_config.block_size)
        self.block_table = BlockTable(max_num_seqs, max_blocks)
        self.staging = StagingBuffers(device)
        self.graphs: Optional[DecodeGraphs] = None
        if use_cuda_graphs:
            self.graphs = DecodeGraphs(model, self.kv_caches, backend, max_num_seqs, max_blocks, max_model_len, device)
            self.graphs.capture()

    # ---- state ----------------------------------------------------------------------------
    def _update_states(self, so: SchedulerOutput) -> None:
        for req_id in so.finished_req_ids:
            state = self.requests.pop(req_id, None)
            if state is not None:
                self.block_table.remove(state.row)
        for new in so.scheduled_new_reqs:
            state = CachedRequestState(
                req_id=new.req_id, token_ids=list(new.token_ids), num_prompt_tokens=new.num_prompt_tokens,
                sampling_params=new.sampling_params, block_ids=list(new.block_ids),
                num_computed_tokens=new.num_computed_tokens)
            state.row = self.block_table.add(state.block_ids)
            self.requests[new.req_id] = state
        for cached in so.scheduled_cached_reqs:
            state = self.requests[cached.req_id]
            if cached.new_block_ids:
                state.block_ids.extend(cached.new_block_ids)
                self.block_table.append(state.row, cached.new_block_ids)
            state.num_computed_tokens = cached.num_computed_tokens

    # ---- one step -------------------------------------------------------------------------
    @torch.inference_mode()
    def execute_model(self, so: SchedulerOutput) -> ModelRunnerOutput:
        self._update_states(so)
        if so.is_empty:
            return ModelRunnerOutput.empty()
        states = [self.requests[req_id] for req_id in so.num_scheduled_tokens]
        inputs = build_step_inputs(states, so.num_scheduled_tokens, self.block_table, self.cache_config.block_size,
                                   self.staging)
        out = ModelRunnerOutput(req_ids=[], sampled_token_ids=[], logprobs=[])
        wants_prompt_logprobs = any(s.sampling_params.prompt_logprobs is not None for s in states)
        if (self.graphs is not None and inputs.is_pure_decode and not wants_prompt_logprobs
                and self.graphs.bucket(len(states)) is not None):
            logits = self.graphs.run(inputs)  # [R, V]: every request of a decode step samples
        else:
            ctx = ForwardContext(attn_metadata=inputs.attn_metadata, kv_caches=self.kv_caches, backend=self.backend)
            with forward_context(ctx):
                hidden = self.model(inputs.input_ids, inputs.positions)  # [T, H]
            if wants_prompt_logprobs:
                self._prompt_logprobs(states, inputs, hidden, out)
            logits = self.model.compute_logits(hidden[inputs.logits_indices]) if inputs.samples.any() else None

        sampling = [s for s, samples in zip(states, inputs.samples.tolist()) if samples]
        if sampling:
            self._sample(sampling, logits, out)
        for state in states:
            state.num_computed_tokens += so.num_scheduled_tokens[state.req_id]
        return out

    def _sample(self, sampling: list[CachedRequestState], logits: torch.Tensor, out: ModelRunnerOutput) -> None:
        # Token lists are copied only for rows whose penalties need them.
        penalised = [s.sampling_params.needs_penalties for s in sampling]
        meta = SamplingMetadata.build(
            [s.sampling_params for s in sampling],
            [s.token_ids[:s.num_prompt_tokens] if p else [] for s, p in zip(sampling, penalised)],
            [s.token_ids[s.num_prompt_tokens:] if p else [] for s, p in zip(sampling, penalised)],
            device=self.device, vocab_size=self.model_config.vocab_size,
            eos_token_ids=self.model_config.eos_token_ids,
            num_output_tokens=[len(s.token_ids) - s.num_prompt_tokens for s in sampling])
        result = self.sampler(logits, meta)
        sampled = result.sampled_token_ids.tolist()  # the step's one device -> host sync
        for i, state in enumerate(sampling):
            state.token_ids.append(sampled[i])
            out.req_ids.append(state.req_id)
            out.sampled_token_ids.append(sampled[i])
            out.logprobs.append(result.logprobs[i] if result.logprobs else None)

    def _prompt_logprobs(self, states: list[CachedRequestState], inputs: StepInputs, hidden: torch.Tensor,
                         out: ModelRunnerOutput) -> None:
        """Top-k logprobs of the next prompt token at each prompt position computed this step."""
        qsl = inputs.query_start_loc.tolist()
        for r, state in enumerate(states):
            k = state.sampling_params.prompt_logprobs
            if k is None:
                continue
            start = state.num_computed_tokens
            end = min(start + qsl[r + 1] - qsl[r], state.num_prompt_tokens - 1)
            if end <= start:
                continue
            logits = self.model.compute_logits(hidden[qsl[r]:qsl[r] + end - start])  # [n, V]
            targets = torch.tensor(state.token_ids[start + 1:end + 1], device=self.device)
            out.prompt_logprobs[state.req_id] = compute_top_logprobs(logits, targets, k)
