"""Model runner: turns a SchedulerOutput into one forward pass and sampled tokens.

Holds only what every model needs: per-request token/block state, the batch tensors, the KV
cache, the forward context and the sampler. Features live in helpers (input_batch, sampler).
"""
from __future__ import annotations

import torch
from torch import nn

from tritium.attention.backend import AttentionBackend, ForwardContext, forward_context
from tritium.config import CacheConfig, ModelConfig
from tritium.core.sched_output import ModelRunnerOutput, SchedulerOutput
from tritium.layers.sampler import Sampler, SamplingMetadata, compute_top_logprobs
from tritium.worker.input_batch import CachedRequestState, build_step_inputs
from tritium.worker.memory_plan import allocate_kv_caches


class ModelRunner:
    def __init__(self, model: nn.Module, model_config: ModelConfig, cache_config: CacheConfig,
                 device: torch.device, backend: AttentionBackend):
        self.model = model
        self.model_config = model_config
        self.cache_config = cache_config
        self.device = device
        self.backend = backend
        self.sampler = Sampler()
        self.requests: dict[str, CachedRequestState] = {}
        self.kv_caches = allocate_kv_caches(model_config, cache_config, device)

    # ---- state ----------------------------------------------------------------------------
    def _update_states(self, so: SchedulerOutput) -> None:
        for req_id in so.finished_req_ids:
            self.requests.pop(req_id, None)
        for new in so.scheduled_new_reqs:
            self.requests[new.req_id] = CachedRequestState(
                req_id=new.req_id, token_ids=list(new.token_ids), num_prompt_tokens=new.num_prompt_tokens,
                sampling_params=new.sampling_params, block_ids=list(new.block_ids),
                num_computed_tokens=new.num_computed_tokens)
        for cached in so.scheduled_cached_reqs:
            state = self.requests[cached.req_id]
            state.block_ids.extend(cached.new_block_ids)
            state.num_computed_tokens = cached.num_computed_tokens

    # ---- one step -------------------------------------------------------------------------
    @torch.inference_mode()
    def execute_model(self, so: SchedulerOutput) -> ModelRunnerOutput:
        self._update_states(so)
        if so.is_empty:
            return ModelRunnerOutput.empty()
        states = [self.requests[req_id] for req_id in so.num_scheduled_tokens]
        inputs = build_step_inputs(states, so.num_scheduled_tokens, self.cache_config.block_size, self.device)

        ctx = ForwardContext(attn_metadata=inputs.attn_metadata, kv_caches=self.kv_caches, backend=self.backend)
        with forward_context(ctx):
            hidden = self.model(inputs.input_ids, inputs.positions)  # [T, H]

        out = ModelRunnerOutput(req_ids=[], sampled_token_ids=[], logprobs=[])
        self._prompt_logprobs(states, inputs, hidden, out)

        sampling = [s for s in states if inputs.samples[s.req_id]]
        if sampling:
            logits = self.model.compute_logits(hidden[inputs.logits_indices])  # [N, V] float32
            meta = SamplingMetadata.build(
                [s.sampling_params for s in sampling],
                [s.token_ids[:s.num_prompt_tokens] for s in sampling],
                [s.token_ids[s.num_prompt_tokens:] for s in sampling],
                device=self.device, vocab_size=self.model_config.vocab_size,
                eos_token_ids=self.model_config.eos_token_ids)
            result = self.sampler(logits, meta)
            sampled = result.sampled_token_ids.tolist()
            for i, state in enumerate(sampling):
                state.token_ids.append(sampled[i])
                out.req_ids.append(state.req_id)
                out.sampled_token_ids.append(sampled[i])
                out.logprobs.append(result.logprobs[i] if result.logprobs else None)
        for state in states:
            state.num_computed_tokens += so.num_scheduled_tokens[state.req_id]
        return out

    def _prompt_logprobs(self, states, inputs, hidden, out: ModelRunnerOutput) -> None:
        """Top-k logprobs of the next prompt token at each prompt position computed this step."""
        for state in states:
            k = state.sampling_params.prompt_logprobs
            if k is None:
                continue
            start = state.num_computed_tokens
            end = min(start + inputs.num_scheduled[state.req_id], state.num_prompt_tokens - 1)
            if end <= start:
                continue
            first = inputs.token_offsets[state.req_id]
            logits = self.model.compute_logits(hidden[first:first + end - start])  # [n, V]
            targets = torch.tensor(state.token_ids[start + 1:end + 1], device=self.device)
            out.prompt_logprobs[state.req_id] = compute_top_logprobs(logits, targets, k)

