"""Model runner: turns a SchedulerOutput into one forward pass and sampled tokens.

Holds only what every model needs: per-request token/block state, the batch tensors, the KV
cache, the forward context, the decode and prefill CUDA graphs and the sampler. Features live in
helpers (input_batch, cuda_graph, prefill_graph, sampler).

On a GPU `execute_model` only launches the step and returns a StepHandle; the sampled tokens
come back with an asynchronous copy, so the engine can schedule and launch step N + 1 while the
GPU still runs step N. A request's token from step N is then unknown on the host when step
N + 1 is built: it is fed in on the device from step N's sampled tensor (a placeholder).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from torch import nn

from tritium.attention.backend import AttentionBackend, ForwardContext, forward_context
from tritium.config import CacheConfig, ModelConfig
from tritium.core.sched_output import ModelRunnerOutput, SchedulerOutput
from tritium.layers.sampler import LogprobsTensors, Sampler, SamplingMetadata
from tritium.structured_output.manager import StructuredOutputManager
from tritium.worker.cuda_graph import DecodeGraphs, decode_graph_sizes
from tritium.worker.input_batch import BlockTable, CachedRequestState, StagingBuffers, StepInputs, build_step_inputs
from tritium.worker.beam_search import BeamCandidateTensors, BeamRows, beam_groups, copy_kv_blocks
from tritium.worker.logits_outputs import LogitsOutputs
from tritium.worker.prefill_graph import MAX_REQS as PREFILL_GRAPH_MAX_REQS, PrefillGraphs
from tritium.worker.memory_plan import allocate_kv_caches
from tritium.worker.sampling_features import SamplingFeatures


@dataclass
class StepHandle:
    """A launched step; result() waits for its sampled tokens and records them."""

    states: list[CachedRequestState] = field(default_factory=list)  # the requests that sampled
    sampled_host: Optional[torch.Tensor] = None  # [N] long, filled by an async copy
    done: Optional[torch.cuda.Event] = None  # recorded after the copies
    logprobs: Optional[LogprobsTensors] = None  # host copies
    num_logprobs: Optional[list[Optional[int]]] = None
    prompt_logprobs: dict = field(default_factory=dict)
    context_logits: dict = field(default_factory=dict)
    generation_logits: Optional[tuple[list[str], torch.Tensor]] = None  # (req ids, host copy [n, V])
    beam_candidates: Optional[BeamCandidateTensors] = None  # beam rows' next tokens (host copies)
    structured_output: Optional[StructuredOutputManager] = None  # set when a row is guided: advance its matcher
    started: Optional[torch.cuda.Event] = None  # timed steps (runner.time_steps): recorded before the step's work

    def gpu_seconds(self) -> Optional[float]:
        """The step's GPU time (after result()), when it was timed."""
        if self.started is None or self.done is None:
            return None
        return self.started.elapsed_time(self.done) / 1e3

    def result(self) -> ModelRunnerOutput:
        if self.done is not None:
            self.done.synchronize()
        out = ModelRunnerOutput(req_ids=[s.req_id for s in self.states], sampled_token_ids=[], logprobs=[],
                                prompt_logprobs=self.prompt_logprobs, context_logits=self.context_logits)
        if self.generation_logits is not None:
            out.generation_logits = dict(zip(self.generation_logits[0], self.generation_logits[1]))
        if self.beam_candidates is not None:
            out.beam_candidates = self.beam_candidates.tolists()
        if not self.states:
            return out
        out.sampled_token_ids = self.sampled_host.tolist()
        for state, token in zip(self.states, out.sampled_token_ids):
            state.token_ids.append(token)
        if self.structured_output is not None:
            self.structured_output.accept(out.req_ids, out.sampled_token_ids)
        lists = self.logprobs.tolists(self.num_logprobs) if self.logprobs is not None else None
        out.logprobs = lists if lists is not None else [None] * len(self.states)
        return out


class ModelRunner:
    def __init__(self, model: nn.Module, model_config: ModelConfig, cache_config: CacheConfig,
                 device: torch.device, backend: AttentionBackend, max_num_seqs: int = 256,
                 max_model_len: Optional[int] = None, use_cuda_graphs: bool = False,
                 max_beam_width: int = 1, batched_logits_processor=None, allow_overlap: bool = True,
                 structured_output: Optional[StructuredOutputManager] = None,
                 cuda_graph_sizes: Optional[tuple[list[int], bool]] = None,
                 prefill_graph_sizes: Optional[list[int]] = None):
        """cuda_graph_sizes: (sizes, padding) of the decode graphs (cuda_graph.decode_graph_sizes;
        None: tritium's sizes up to max_num_seqs, padded). prefill_graph_sizes: token counts of
        the graphs for steps with prompt tokens (prefill_graph.prefill_graph_sizes; None: none)."""
        self.model = model
        self.model_config = model_config
        self.cache_config = cache_config
        self.device = device
        self.backend = backend
        self.sampler = Sampler()
        # Logits processors, embedding_bias, bad words, n-gram bans, top_p decay, end_id.
        self.sampling_features = SamplingFeatures(device, model_config.vocab_size, model_config.eos_token_ids,
                                                  batched_logits_processor)
        self.logits_outputs = LogitsOutputs(device)  # prompt logprobs, context and generation logits
        self.beam_rows = BeamRows()  # beam search rows: candidates instead of a sampled token
        self.structured_output = structured_output  # grammar matchers of guided requests
        self.requests: dict[str, CachedRequestState] = {}
        self.kv_caches = allocate_kv_caches(model_config, cache_config, device)
        max_model_len = max_model_len or cache_config.num_blocks * cache_config.block_size
        max_blocks = -(-max_model_len // cache_config.block_size)
        max_rows = max_num_seqs * max_beam_width  # a beam search holds one row per beam
        self.block_table = BlockTable(max_rows, max_blocks)
        # Overlap needs asynchronous devices; two staging sets alternate (see StagingBuffers).
        self._is_async = device.type == "cuda"  # kernels run asynchronously to the host
        self.supports_overlap = self._is_async and allow_overlap
        self.time_steps = False  # record each step's GPU time (late scheduling sets it)
        self._staging = [StagingBuffers(device), StagingBuffers(device)]
        self._sampled_host = [torch.empty(max_rows, dtype=torch.long, pin_memory=self._is_async)
                              for _ in range(2)]
        self._step = 0
        # The last step's sampled tokens on the device, and the row of each request in it.
        self._prev_sampled: Optional[torch.Tensor] = None
        self._prev_rows: dict[str, int] = {}
        self._sync_req_ids: set[str] = set()  # requests whose features need every token on the host
        self.num_placeholder_tokens = 0  # inputs fed from the previous step's device tensor (a statistic)
        self.graphs: Optional[DecodeGraphs] = None
        self.prefill_graphs: Optional[PrefillGraphs] = None
        self.graph_pool_bytes = 0
        if use_cuda_graphs:
            before = torch.cuda.memory_allocated(device)
            pool = torch.cuda.graph_pool_handle()  # shared: one graph's temporaries are live at a time
            if prefill_graph_sizes:  # first: their largest step holds the most temporaries
                self.prefill_graphs = PrefillGraphs(model, self.kv_caches, backend, prefill_graph_sizes,
                                                    min(PREFILL_GRAPH_MAX_REQS, max_rows), max_blocks,
                                                    max_model_len, device)
                self.prefill_graphs.capture(pool)
            sizes, padding = cuda_graph_sizes or decode_graph_sizes(max_num_seqs)
            self.graphs = DecodeGraphs(model, self.kv_caches, backend, sizes, max_blocks, max_model_len, device,
                                       padding)
            self.graphs.capture(pool)
            self.graph_pool_bytes = torch.cuda.memory_allocated(device) - before

    # ---- state ----------------------------------------------------------------------------
    def _update_states(self, so: SchedulerOutput) -> None:
        for req_id in so.finished_req_ids:
            state = self.requests.pop(req_id, None)
            if state is not None:
                self.block_table.remove(state.row)
                self._sync_req_ids.discard(req_id)
                self.sampling_features.remove(req_id)
                self.logits_outputs.remove(req_id)
                self.beam_rows.remove(req_id)
                if self.structured_output is not None:
                    self.structured_output.remove(req_id)
        for new in so.scheduled_new_reqs:
            state = CachedRequestState(
                req_id=new.req_id, token_ids=list(new.token_ids), num_prompt_tokens=new.num_prompt_tokens,
                sampling_params=new.sampling_params, block_ids=list(new.block_ids),
                num_computed_tokens=new.num_computed_tokens)
            state.row = self.block_table.add(state.block_ids)
            self.requests[new.req_id] = state
            if needs_host_tokens(new.sampling_params):
                self._sync_req_ids.add(new.req_id)
            self.sampling_features.add(new.req_id, new.sampling_params)
            self.logits_outputs.add(new.req_id, new.sampling_params)
            self.beam_rows.add(new.req_id, new.num_beam_candidates)
            if self.structured_output is not None:
                self.structured_output.add_request(new.req_id, new.sampling_params,
                                                   new.token_ids[new.num_prompt_tokens:])
        for cached in so.scheduled_cached_reqs:
            state = self.requests[cached.req_id]
            if cached.new_block_ids:
                state.block_ids.extend(cached.new_block_ids)
                self.block_table.append(state.row, cached.new_block_ids)
            state.num_computed_tokens = cached.num_computed_tokens

    def can_overlap(self, so: SchedulerOutput) -> bool:
        """Whether this step may be launched before the previous step's tokens reach the host."""
        if not self.supports_overlap:
            return False
        if any(needs_host_tokens(r.sampling_params) for r in so.scheduled_new_reqs):
            return False
        return not (self._sync_req_ids and not self._sync_req_ids.isdisjoint(so.num_scheduled_tokens))

    # ---- one step -------------------------------------------------------------------------
    @torch.inference_mode()
    def execute_model(self, so: SchedulerOutput) -> StepHandle:
        self._update_states(so)
        if so.blocks_to_copy:  # beams about to write into a block they shared: each its own copy first
            copy_kv_blocks(self.kv_caches, so.blocks_to_copy)
        if so.is_empty:
            return StepHandle()
        started = None
        if self._is_async and self.time_steps:  # the step's GPU time, for late scheduling (engine/pacing.py)
            started = torch.cuda.Event(enable_timing=True)
            started.record()
        states = [self.requests[req_id] for req_id in so.num_scheduled_tokens]
        if so.total_num_scheduled_tokens != len(states):
            # prompt tokens in the step: one-token requests first, for the backend's decode
            # attention (AttentionMetadata.num_decodes)
            states.sort(key=lambda s: so.num_scheduled_tokens[s.req_id] != 1)
        self._step += 1
        inputs = build_step_inputs(states, so.num_scheduled_tokens, self.block_table, self.cache_config.block_size,
                                   self._staging[self._step % 2])
        if len(inputs.placeholder_tokens):
            self._fill_placeholders(inputs, states)
        self._prev_sampled, self._prev_rows = None, {}
        handle = StepHandle(started=started)
        wants_prompt_outputs = self.logits_outputs.wants_prompt_outputs(so.num_scheduled_tokens)
        prefill_size = (self.prefill_graphs.bucket(inputs)
                        if self.prefill_graphs is not None and not wants_prompt_outputs else None)
        if (self.graphs is not None and inputs.is_pure_decode and not wants_prompt_outputs
                and self.graphs.bucket(len(states)) is not None):
            logits = self.graphs.run(inputs)  # [R, V]: every request of a decode step samples
        elif prefill_size is not None:
            logits = self.prefill_graphs.run(inputs, prefill_size)  # [N, V]: the requests that sample
        else:
            ctx = ForwardContext(attn_metadata=inputs.attn_metadata, kv_caches=self.kv_caches, backend=self.backend)
            with forward_context(ctx):
                hidden = self.model(inputs.input_ids, inputs.positions)  # [T, H]
            if wants_prompt_outputs:
                self.logits_outputs.prompt_outputs(self.model, states, inputs, hidden, handle.prompt_logprobs,
                                                   handle.context_logits)
            logits = self.model.compute_logits(hidden[inputs.logits_indices]) if inputs.samples.any() else None

        sampling = [i for i, samples in enumerate(inputs.samples.tolist()) if samples]
        if sampling:
            self._sample([states[i] for i in sampling], inputs.seq_lens[sampling].tolist(), logits, handle)
        for state in states:
            state.num_computed_tokens += so.num_scheduled_tokens[state.req_id]
        if self._is_async:  # also marks this step's staging buffers free for reuse
            handle.done = torch.cuda.Event(enable_timing=started is not None)
            handle.done.record()
        return handle

    def _fill_placeholders(self, inputs: StepInputs, states: list[CachedRequestState]) -> None:
        """Inputs still being sampled by the previous step: copy them from its device tensor."""
        try:
            rows = [self._prev_rows[states[r].req_id] for r in inputs.placeholder_reqs.tolist()]
        except KeyError as e:
            raise RuntimeError(f"request {e.args[0]} has an unknown input token that the previous step "
                               "did not sample") from None
        dst, src = self._staging[self._step % 2].to_device(
            [inputs.placeholder_tokens, np.array(rows, dtype=np.int64)], torch.int64, purpose="placeholders")
        inputs.input_ids.index_copy_(0, dst, self._prev_sampled.index_select(0, src))
        self.num_placeholder_tokens += len(rows)

    def _sample(self, sampling: list[CachedRequestState], seq_lens: list[int], logits: torch.Tensor,
                handle: StepHandle) -> None:
        if self.logits_outputs.generation_req_ids:
            handle.generation_logits = self.logits_outputs.generation_logits(sampling, logits, self._is_async)
        if self.beam_rows.active:  # beams report candidates instead of sampling
            beams, others = self.beam_rows.split([s.req_id for s in sampling])
            if beams:
                self._beam_candidates([sampling[i] for i in beams], [seq_lens[i] for i in beams], logits[beams],
                                      handle)
                if not others:
                    return
                sampling, seq_lens = [sampling[i] for i in others], [seq_lens[i] for i in others]
                logits = logits[others]
        meta = self._sampling_metadata(sampling, seq_lens)
        if self.structured_output is not None:
            meta.token_bitmask = self.structured_output.bitmask([s.req_id for s in sampling], self.device)
            if meta.token_bitmask is not None:
                handle.structured_output = self.structured_output
        result = self.sampler(logits, meta)
        sampled = result.sampled_token_ids  # [N] long, on the device
        self._prev_sampled = sampled
        self._prev_rows = {s.req_id: i for i, s in enumerate(sampling)}
        host = self._sampled_host[self._step % 2][:len(sampling)]
        host.copy_(sampled, non_blocking=self._is_async)
        if result.logprobs_tensors is not None:
            handle.logprobs = result.logprobs_tensors.to_host(non_blocking=self._is_async)
            handle.num_logprobs = result.num_logprobs
        handle.states, handle.sampled_host = sampling, host

    def _sampling_metadata(self, sampling: list[CachedRequestState], seq_lens: list[int],
                           groups: Optional[list[list[int]]] = None) -> SamplingMetadata:
        params = [s.sampling_params for s in sampling]
        eos, extras = self.model_config.eos_token_ids, None
        if self.sampling_features.active:  # some request in the runner uses a feature of sampling_features
            step = self.sampling_features.prepare([s.req_id for s in sampling], params, [s.token_ids for s in sampling],
                                                  [s.num_prompt_tokens for s in sampling], groups)
            params, extras, eos = step.params, step.logits_extras, step.eos_token_ids
        # Token lists are copied only for rows whose penalties need them (and those rows never
        # overlap, so their lists are complete). Outputs so far = sequence length - prompt.
        penalised = [p.needs_penalties for p in params]
        meta = SamplingMetadata.build(
            params,
            [s.token_ids[:s.num_prompt_tokens] if p else [] for s, p in zip(sampling, penalised)],
            [s.token_ids[s.num_prompt_tokens:] if p else [] for s, p in zip(sampling, penalised)],
            device=self.device, vocab_size=self.model_config.vocab_size, eos_token_ids=eos,
            num_output_tokens=[n - s.num_prompt_tokens for s, n in zip(sampling, seq_lens)])
        meta.logits_extras = extras
        return meta

    def _beam_candidates(self, beams: list[CachedRequestState], seq_lens: list[int], logits: torch.Tensor,
                         handle: StepHandle) -> None:
        req_ids = [s.req_id for s in beams]
        meta = self._sampling_metadata(beams, seq_lens, beam_groups(req_ids))
        processed = self.sampler.process_logits(logits, meta)  # [n, V] float32
        handle.beam_candidates = self.beam_rows.candidates(
            processed, [s.sampling_params.temperature for s in beams], req_ids, self._is_async)


def needs_host_tokens(params) -> bool:
    """Features that read a request's previous tokens on the host each step (penalties count
    them, processors and bans read them, beams are chosen there): such requests run without overlap."""
    return params.needs_host_tokens
