"""Host time of a decode step's bookkeeping at large batches, no model: Scheduler.schedule(), the
runner's build_step_inputs(), Scheduler.update_from_output() and the front's
OutputProcessor.process_outputs() (no tokenizer, as with dummy weights) for B requests of 128
prompt tokens decoding together, with Python's cyclic garbage collector as is, frozen once the
scheduler is built, as BackgroundEngine sets it once the engine is built (relax_gc: frozen and
young collections every 10,000 allocations), or off.

    python scripts/bench_host_step.py [--batches 512 1024 2048] [--gc as-is freeze engine off]
"""
from __future__ import annotations

import argparse
import gc
import random
import time

import torch

from tritium.config import CacheConfig, ResolvedSchedulerConfig
from tritium.core.request import Request
from tritium.core.sched_output import ModelRunnerOutput
from tritium.core.scheduler import Scheduler
from tritium.engine.background import relax_gc, restore_gc
from tritium.llm.output_processor import OutputProcessor
from tritium.sampling_params import SamplingParams
from tritium.worker.input_batch import BlockTable, CachedRequestState, StagingBuffers, build_step_inputs

PROMPT, OUTPUT, BLOCK = 128, 128, 16


def run(batch: int, gc_mode: str) -> dict[str, float]:
    """Milliseconds per pure-decode step of `batch` requests, averaged over the run's decode steps."""
    gc.enable()
    blocks_per_seq = -(-(PROMPT + OUTPUT) // BLOCK) + 1
    sched = Scheduler(ResolvedSchedulerConfig(max_num_seqs=batch, max_num_batched_tokens=8192,
                                              max_model_len=PROMPT + OUTPUT),
                      CacheConfig(block_size=BLOCK, num_blocks=batch * blocks_per_seq, enable_prefix_caching=True))
    front = OutputProcessor(None)
    if gc_mode == "freeze":
        gc.freeze()
    elif gc_mode == "engine":
        relax_gc()
    elif gc_mode == "off":
        gc.disable()
    params = SamplingParams(max_tokens=OUTPUT, ignore_eos=True)
    rng = random.Random(0)
    for i in range(batch):
        prompt = [rng.randrange(1, 30000) for _ in range(PROMPT)]
        sched.add_request(Request(str(i), prompt, params))
        front.add_request(str(i), None, prompt, params, sink=lambda output: None, streaming=False)
    states: dict[str, CachedRequestState] = {}
    table = BlockTable(batch, blocks_per_seq)
    staging = StagingBuffers(torch.device("cpu"))
    totals = {"schedule": 0.0, "build_step_inputs": 0.0, "update_from_output": 0.0, "process_outputs": 0.0}
    decode_steps = 0
    for _ in range(PROMPT * batch // 8192 + 40):
        t0 = time.perf_counter()
        so = sched.schedule()
        t1 = time.perf_counter()
        for new in so.scheduled_new_reqs:
            state = CachedRequestState(req_id=new.req_id, token_ids=list(new.token_ids),
                                       num_prompt_tokens=len(new.token_ids), sampling_params=params,
                                       block_ids=list(new.block_ids), num_computed_tokens=new.num_computed_tokens)
            state.row = table.add(state.block_ids)
            states[new.req_id] = state
        step = [states[r] for r in so.num_scheduled_tokens]
        t2 = time.perf_counter()
        build_step_inputs(step, so.num_scheduled_tokens, table, BLOCK, staging)
        t3 = time.perf_counter()
        sampled = []
        for state in step:
            state.num_computed_tokens += so.num_scheduled_tokens[state.req_id]
            if state.num_computed_tokens >= len(state.token_ids):
                state.token_ids.append(5)
                sampled.append(state.req_id)
        t4 = time.perf_counter()
        outputs = sched.update_from_output(so, ModelRunnerOutput(req_ids=sampled, sampled_token_ids=[5] * len(sampled),
                                                                 logprobs=[None] * len(sampled)))
        t5 = time.perf_counter()
        front.process_outputs(outputs)
        t6 = time.perf_counter()
        if so.total_num_scheduled_tokens == len(step) == batch:
            decode_steps += 1
            totals["schedule"] += t1 - t0
            totals["build_step_inputs"] += t3 - t2
            totals["update_from_output"] += t5 - t4
            totals["process_outputs"] += t6 - t5
    if gc_mode == "engine":
        restore_gc()
    gc.unfreeze()
    gc.enable()
    return {k: v / decode_steps * 1e3 for k, v in totals.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--gc", nargs="+", choices=("as-is", "freeze", "engine", "off"),
                    default=["as-is", "freeze", "engine", "off"])
    args = ap.parse_args()
    for batch in args.batches:
        for mode in args.gc:
            ms = run(batch, mode)
            print(f"batch {batch:5d}, gc {mode:6s}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items()), flush=True)


if __name__ == "__main__":
    main()
