"""One GPU call: correctness of the fast path against the reference path, then speed.

    python3 scripts/gpu_speed_check.py [--skip-speed] [--out DIR]

1. Tiny random checkpoints of several families (made here with transformers): greedy tokens of a
   batch of prompts through the engine with CUDA graphs == without graphs == the torch reference
   attention (TRITIUM_TRITON=0, in a subprocess) == Hugging Face transformers generate.
2. Kernels at real sizes (Llama-3.1-8B attention shapes) against a float64 reference, and their
   times: decode attention at batch 1 / 64 / 256 and contexts 1k-32k, prefill attention at 1k.
3. Llama-3.1-8B shapes with random bf16 weights: engine start-up, batch-1 and batch-64 decode
   (128 in / 128 out), time to first token of a 1000-token prompt; CUDA graphs on and off.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LLAMA_8B = os.path.join(ROOT, "tests", "models", "data", "llama-3.1-8b-config.json")


def tiny_prompts(vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (5, 17, 33, 64, 1, 40)]


def engine_tokens(path: str, prompts, enforce_eager: bool, max_tokens: int = 24) -> list[list[int]]:
    from tritium import BuildConfig, SamplingParams
    from tritium.llm.llm import LLM

    llm = LLM(path, dtype="float32", enforce_eager=enforce_eager,
              build_config=BuildConfig(max_batch_size=8, max_seq_len=256, max_num_tokens=64))
    outs = llm.generate(prompts, SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True),
                        use_tqdm=False)
    llm.shutdown()
    return [o.outputs[0].token_ids for o in outs]


def hf_tokens(path: str, prompts, max_tokens: int = 24) -> list[list[int]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).cuda().eval()
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p], device="cuda")
            gen = model.generate(ids, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False,
                                 pad_token_id=0)
            out.append(gen[0, len(p):].tolist())
    return out


def check_tiny_families(report: dict) -> None:
    from tests.utils.tiny_models import make_tiny_checkpoint

    for family in ("llama3", "qwen2", "qwen3", "smollm", "mistral"):
        folder = tempfile.mkdtemp()
        path = make_tiny_checkpoint(family, folder)
        import json as _json
        vocab = _json.load(open(os.path.join(path, "config.json")))["vocab_size"]
        prompts = tiny_prompts(vocab)
        graphs = engine_tokens(path, prompts, enforce_eager=False)
        eager = engine_tokens(path, prompts, enforce_eager=True)
        env = dict(os.environ, TRITIUM_TRITON="0")
        ref = json.loads(subprocess.run(
            [sys.executable, __file__, "--reference-tokens", path], env=env, capture_output=True, text=True,
            check=True).stdout.strip().splitlines()[-1])
        hf = hf_tokens(path, prompts)
        ok = graphs == eager == ref
        agree_hf = sum(a == b for a, b in zip(graphs, hf))
        report[f"tiny-{family}"] = dict(graphs_eq_eager=graphs == eager, graphs_eq_torch_ref=graphs == ref,
                                        prompts_equal_to_hf=f"{agree_hf}/{len(prompts)}")
        print(f"[tiny {family}] graphs==eager {graphs == eager}  graphs==torch-reference {graphs == ref}  "
              f"==HF {agree_hf}/{len(prompts)}  {'OK' if ok else 'MISMATCH'}", flush=True)
        shutil.rmtree(folder, ignore_errors=True)


def bench(fn, warmup=3, iters=20) -> float:
    """Median milliseconds of fn() timed with CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def check_kernels_real_sizes(report: dict) -> None:
    from tests.kernels.paged_cache import dense_kv, random_paged_cache, reference_attention
    from tritium.kernels.decode_attention import num_kv_splits, paged_decode_attention
    from tritium.kernels.prefill_attention import paged_prefill_attention

    heads, kvh, d, bs = 32, 8, 128, 16
    dev = torch.device("cuda")
    for batch, ctx in ((1, 1024), (1, 4096), (1, 32768), (64, 2048), (256, 1024), (256, 2048)):
        seq_lens = [ctx] * batch
        cache, table = random_paged_cache(seq_lens, kvh, d, bs, torch.bfloat16, dev, seed=batch)
        q = torch.randn(batch, heads, d, device=dev, dtype=torch.bfloat16)
        lens = torch.tensor(seq_lens, dtype=torch.int32, device=dev)
        splits = num_kv_splits(batch, kvh, ctx)
        out = paged_decode_attention(q, cache, table, lens, d ** -0.5, num_splits=splits)
        k, v = dense_kv(cache, table[0], ctx)
        ref = reference_attention(q[:1], k, v, d ** -0.5, torch.tensor([ctx - 1], device=dev))
        err = ((out[:1].double() - ref).norm() / ref.norm()).item()
        ms = bench(lambda: paged_decode_attention(q, cache, table, lens, d ** -0.5, num_splits=splits))
        gbps = batch * ctx * kvh * d * 2 * 2 / ms / 1e6
        report[f"decode b{batch} ctx{ctx}"] = dict(splits=splits, us=ms * 1e3, GBps=gbps, rel_err=err)
        print(f"[decode attn] batch {batch:3d} ctx {ctx:5d} splits {splits:2d}: {ms * 1e3:7.1f} us "
              f"({gbps:6.0f} GB/s)  rel err {err:.1e}", flush=True)
        del cache
    for q_len, ctx in ((1000, 0), (512, 1536)):
        cache, table = random_paged_cache([ctx + q_len], kvh, d, bs, torch.bfloat16, dev, seed=7)
        q = torch.randn(q_len, heads, d, device=dev, dtype=torch.bfloat16)
        qsl = torch.tensor([0, q_len], dtype=torch.int32, device=dev)
        lens = torch.tensor([ctx + q_len], dtype=torch.int32, device=dev)
        out = paged_prefill_attention(q, cache, table, qsl, lens, q_len, d ** -0.5)
        k, v = dense_kv(cache, table[0], ctx + q_len)
        ref = reference_attention(q, k, v, d ** -0.5, torch.arange(ctx, ctx + q_len, device=dev))
        err = ((out.double() - ref).norm() / ref.norm()).item()
        ms = bench(lambda: paged_prefill_attention(q, cache, table, qsl, lens, q_len, d ** -0.5))
        tflops = 4 * q_len * (ctx + q_len / 2) * d * heads / ms / 1e9
        report[f"prefill q{q_len} ctx{ctx}"] = dict(us=ms * 1e3, TFLOPs=tflops, rel_err=err)
        print(f"[prefill attn] q {q_len} after ctx {ctx}: {ms * 1e3:7.1f} us ({tflops:5.1f} TFLOP/s) "
              f"rel err {err:.1e}", flush=True)


def llama_8b_speed(report: dict, enforce_eager: bool, tag: str = "") -> None:
    from tritium import BuildConfig, SamplingParams
    from tritium.llm.llm import LLM

    folder = tempfile.mkdtemp()
    shutil.copy(LLAMA_8B, os.path.join(folder, "config.json"))
    tag = tag or ("eager" if enforce_eager else "graphs")
    t0 = time.perf_counter()
    llm = LLM(folder, load_format="dummy", enforce_eager=enforce_eager,
              build_config=BuildConfig(max_batch_size=256, max_seq_len=4096, max_num_tokens=8192))
    up = time.perf_counter() - t0
    print(f"[8B {tag}] engine up in {up:.1f} s; {llm.kv_cache_plan.describe()}", flush=True)
    report[f"8b {tag} engine_up_s"] = up
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(10, 32000, (128,), generator=g).tolist() for _ in range(256)]
    params = SamplingParams(max_tokens=128, temperature=0.0, ignore_eos=True)
    llm.generate(prompts[:2], SamplingParams(max_tokens=8, ignore_eos=True), use_tqdm=False)
    for batch in (1, 64, 256):
        t = time.perf_counter()
        outs = llm.generate(prompts[:batch], params, use_tqdm=False)
        dt = time.perf_counter() - t
        n = sum(len(o.outputs[0].token_ids) for o in outs)
        report[f"8b {tag} batch{batch} tok_s"] = n / dt
        print(f"[8B {tag}] batch {batch:3d}: {n / dt:8.1f} output tok/s ({dt:.2f} s, 128 in / 128 out)", flush=True)
    long_prompt = torch.randint(10, 32000, (1000,), generator=g).tolist()
    ttfts = []
    for i in range(6):
        p = [(i * 31 + 7) % 30000 + 10] + long_prompt[1:]  # distinct first token: no prefix-cache hit
        t = time.perf_counter()
        llm.generate([p], SamplingParams(max_tokens=1), use_tqdm=False)
        ttfts.append((time.perf_counter() - t) * 1e3)
    ttft = sorted(ttfts[1:])[len(ttfts[1:]) // 2]
    report[f"8b {tag} ttft_1000_ms"] = ttft
    print(f"[8B {tag}] time to first token, 1000-token prompt: median {ttft:.1f} ms ({[round(x, 1) for x in ttfts]})",
          flush=True)
    llm.shutdown()
    del llm
    torch.cuda.empty_cache()


def offline_throughput(report: dict, input_len: int, output_len: int, num_requests: int, max_batch: int) -> None:
    """Offline: every request submitted at once, greedy, EOS ignored (exact output lengths)."""
    from tritium import BuildConfig, SamplingParams
    from tritium.llm.llm import LLM

    folder = tempfile.mkdtemp()
    shutil.copy(LLAMA_8B, os.path.join(folder, "config.json"))
    llm = LLM(folder, load_format="dummy",
              build_config=BuildConfig(max_batch_size=max_batch, max_seq_len=input_len + output_len + 16,
                                       max_num_tokens=8192))
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(10, 120000, (input_len,), generator=g).tolist() for _ in range(num_requests)]
    llm.generate(prompts[:8], SamplingParams(max_tokens=8, ignore_eos=True), use_tqdm=False)
    params = SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True, detokenize=False)
    t = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    dt = time.perf_counter() - t
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    key = f"offline {input_len}/{output_len} x{num_requests} bs{max_batch}"
    report[key] = dict(output_tok_s=n / dt, seconds=dt, preemptions=llm._engine.core.scheduler.num_preemptions_total)
    print(f"[{key}] {n / dt:9.1f} output tok/s ({dt:.1f} s, {n} tokens, "
          f"{llm._engine.core.scheduler.num_preemptions_total} preemptions)", flush=True)
    llm.shutdown()


def profile_decode(report: dict, batch: int, quant_algo: Optional[str] = None, prompt_len: int = 128,
                   max_tokens: int = 64) -> None:
    """Kernel time of decode steps (torch profiler) against their wall time; with max_tokens=1, of
    one prefill step of `prompt_len` tokens (its wall time against its kernels: launch overhead)."""
    from torch.profiler import ProfilerActivity, profile

    from tritium import BuildConfig, SamplingParams
    from tritium.llm.llm import LLM
    from tritium.quantization import QuantConfig

    folder = tempfile.mkdtemp()
    shutil.copy(LLAMA_8B, os.path.join(folder, "config.json"))
    quant = QuantConfig(quant_algo=quant_algo) if quant_algo else None
    llm = LLM(folder, load_format="dummy", build_config=BuildConfig(max_batch_size=max(batch, 8), max_seq_len=2048),
              quant_config=quant)
    rng = np.random.default_rng(batch)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, detokenize=False)
    llm.generate(rng.integers(10, 30000, (batch, prompt_len)).tolist(), params, use_tqdm=False)
    prompts = rng.integers(10, 30000, (batch, prompt_len)).tolist()  # fresh: no cached prefix
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        wall = time.perf_counter() - t
    events = prof.key_averages()
    cuda_total = sum(e.self_device_time_total for e in events) / 1e3  # ms
    tag = f"batch {batch}, {quant_algo or 'bf16'}, {prompt_len} in / {max_tokens} out"
    print(f"[profile {tag}] wall {wall * 1e3:.1f} ms for {max_tokens} steps, kernels {cuda_total:.1f} ms "
          f"({100 * cuda_total / (wall * 1e3):.0f}% busy)", flush=True)
    print(events.table(sort_by="self_device_time_total", row_limit=18, max_name_column_width=60), flush=True)
    report[f"profile {tag}"] = dict(wall_ms=wall * 1e3, kernel_ms=cuda_total)
    llm.shutdown()


def prefill_loop(report: dict, prompt_len: int = 467, seconds: float = 30.0, tag: str = "") -> None:
    """One fresh prompt_len-token prompt at a time, max_tokens 1, for `seconds` (a profiler such as
    py-spy attaches meanwhile): each request's wall time is what the serving TTFT is made of."""
    from tritium import BuildConfig, SamplingParams
    from tritium.llm.llm import LLM

    folder = tempfile.mkdtemp()
    shutil.copy(LLAMA_8B, os.path.join(folder, "config.json"))
    llm = LLM(folder, load_format="dummy", build_config=BuildConfig(max_batch_size=8, max_seq_len=2048))
    rng = np.random.default_rng(0)
    params = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True, detokenize=False)
    for _ in range(3):
        llm.generate([rng.integers(10, 30000, prompt_len).tolist()], params, use_tqdm=False)
    print("[prefill-loop] warm", flush=True)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        llm.generate([rng.integers(10, 30000, prompt_len).tolist()], params, use_tqdm=False)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    key = f"prefill-loop {prompt_len} {tag}".strip()
    report[key] = dict(median_ms=times[len(times) // 2], runs=len(times))
    print(f"[{key}] {len(times)} requests, wall median {times[len(times) // 2]:.1f} ms, "
          f"min {times[0]:.1f}, max {times[-1]:.1f}", flush=True)
    llm.shutdown()


def prefill_timeline(report: dict, prompt_len: int = 467, runs: int = 40, tag: str = "",
                     decoding: int = 0) -> None:
    """Where a lone prompt's time to first token goes, in-process (engine thread): host stamps of
    its way (generate -> engine add -> step launch -> tokens on the host -> front) and the GPU time
    of its prefill step (CUDA events). `decoding`: requests kept decoding meanwhile (as at 2 req/s)."""
    from tritium import BuildConfig, SamplingParams
    from tritium.engine.background import BackgroundEngine
    from tritium.engine.engine_core import EngineCore
    from tritium.llm.llm import LLM

    folder = tempfile.mkdtemp()  # SPEED_CHECK_CONFIG: a small shape for a CPU smoke run of the script
    shutil.copy(os.environ.get("SPEED_CHECK_CONFIG", LLAMA_8B), os.path.join(folder, "config.json"))
    llm = LLM(folder, load_format="dummy", build_config=BuildConfig(max_batch_size=64, max_seq_len=4096))
    runner = llm._parts.core.runner
    runner.time_steps = True
    marks: dict = {}
    watched: dict = {}  # "timing" while a prompt is timed, and its request id once scheduled

    def stamp(name):
        if watched and name not in marks:
            marks[name] = time.perf_counter()

    orig_add, orig_core_add, orig_exec = BackgroundEngine.add_requests, EngineCore.add_request, runner.execute_model
    orig_out = llm._on_outputs

    def add_requests(self, requests):
        stamp("front add")
        return orig_add(self, requests)

    def core_add(self, request):
        stamp("engine add")
        return orig_core_add(self, request)

    def execute_model(so):
        new = bool(watched) and bool(so.scheduled_new_reqs)  # only the timed request is new
        if new:
            watched.update((r.req_id, True) for r in so.scheduled_new_reqs)
            marks["launch start"] = time.perf_counter()
        handle = orig_exec(so)
        if new:
            marks["launch end"] = time.perf_counter()
            marks["handle"] = handle
            orig_result = handle.result

            def result():
                out = orig_result()
                marks["tokens on host"] = time.perf_counter()
                return out
            handle.result = result
        return handle

    def on_outputs(outputs):
        if watched and any(o.req_id in watched for o in outputs):
            stamp("front outputs")
        return orig_out(outputs)

    BackgroundEngine.add_requests, EngineCore.add_request = add_requests, core_add
    runner.execute_model = execute_model
    llm._engine._handle_outputs = on_outputs
    rng = np.random.default_rng(0)
    params = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True, detokenize=False)
    background = SamplingParams(max_tokens=4000, temperature=0.0, ignore_eos=True, detokenize=False)
    streams = [llm.generate_async(rng.integers(10, 30000, 64).tolist(), background) for _ in range(decoding)]
    for _ in range(3):
        llm.generate([rng.integers(10, 30000, prompt_len).tolist()], params, use_tqdm=False)
    rows = []
    for _ in range(runs):
        time.sleep(0.0137)  # arrive at some point of a decode step
        marks.clear()
        prompt = rng.integers(10, 30000, prompt_len).tolist()
        watched.clear()
        watched["timing"] = True
        t0 = time.perf_counter()
        # generate's own request id is not known before submission: watch every new request
        out = llm.generate([prompt], params, use_tqdm=False)[0]
        t1 = time.perf_counter()
        watched.clear()
        handle = marks.pop("handle", None)
        gpu = handle.gpu_seconds() if handle is not None else None
        row = {k: (v - t0) * 1e3 for k, v in marks.items()}
        row["generate returned"] = (t1 - t0) * 1e3
        row["prefill step GPU"] = gpu * 1e3 if gpu is not None else float("nan")
        rows.append(row)
    for s in streams:
        llm.abort(s.request_id)
    keys = list(rows[-1])
    med = {k: float(np.median([r.get(k, float("nan")) for r in rows])) for k in keys}
    key = f"prefill-timeline {prompt_len} {tag}".strip()
    report[key] = med
    print(f"[{key}] {runs} prompts, {decoding} decoding meanwhile; medians in ms from generate(): "
          + ", ".join(f"{k} {v:.2f}" for k, v in med.items()), flush=True)
    llm.shutdown()


def cold_start(report: dict) -> None:
    """Process start to the first token of an 8B dummy model (a fresh Python process)."""
    code = ("import time, tempfile, shutil, os; t0 = time.time();"
            "from tritium import LLM, SamplingParams, BuildConfig;"
            f"d = tempfile.mkdtemp(); shutil.copy({LLAMA_8B!r}, os.path.join(d, 'config.json'));"
            "llm = LLM(d, load_format='dummy', build_config=BuildConfig(max_seq_len=4096));"
            "t1 = time.time(); llm.generate([[11, 12, 13]], SamplingParams(max_tokens=1), use_tqdm=False);"
            "print('COLD', t1 - t0, time.time() - t0)")
    start = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    total = time.time() - start
    line = [x for x in out.stdout.splitlines() if x.startswith("COLD")]
    if not line:
        print(out.stderr[-3000:])
        return
    _, ready, first = line[0].split()
    report["cold start"] = dict(process_s=total, engine_ready_s=float(ready), first_token_s=float(first))
    print(f"[cold start] interpreter start to engine ready {float(ready):.1f} s, to first token {float(first):.1f} s "
          f"(whole process incl. exit {total:.1f} s)", flush=True)


def diagnose_prefill(report: dict) -> None:
    """Time to first token and batch-64 speed with overlap on and off; a profile of one prefill."""
    from torch.profiler import ProfilerActivity, profile

    from tritium import BuildConfig, SamplingParams
    from tritium.llm.llm import LLM

    folder = tempfile.mkdtemp()
    shutil.copy(LLAMA_8B, os.path.join(folder, "config.json"))
    from tritium import KvCacheConfig

    llm = LLM(folder, load_format="dummy", build_config=BuildConfig(max_batch_size=256, max_seq_len=4096),
              kv_cache_config=KvCacheConfig(enable_block_reuse=False))
    runner = llm._engine.core.runner
    g = torch.Generator().manual_seed(5)
    long_prompt = torch.randint(10, 32000, (1000,), generator=g).tolist()
    prompts = [torch.randint(10, 32000, (128,), generator=g).tolist() for _ in range(64)]
    llm.generate(prompts[:2], SamplingParams(max_tokens=8, ignore_eos=True), use_tqdm=False)
    for overlap in (True, False):
        runner.supports_overlap = overlap
        ttfts = []
        for i in range(6):
            p = [(i * 31 + 7 + overlap * 1000) % 30000 + 10] + long_prompt[1:]
            t = time.perf_counter()
            llm.generate([p], SamplingParams(max_tokens=1), use_tqdm=False)
            ttfts.append((time.perf_counter() - t) * 1e3)
        for batch_size in (1, 64, 256):
            prompts = [torch.randint(10, 32000, (128,), generator=torch.Generator().manual_seed(9)).tolist()
                       for _ in range(batch_size)]
            t = time.perf_counter()
            outs = llm.generate(prompts, SamplingParams(max_tokens=128, temperature=0.0, ignore_eos=True),
                                use_tqdm=False)
            dt = time.perf_counter() - t
            n = sum(len(o.outputs[0].token_ids) for o in outs)
            tokens = [o.outputs[0].token_ids for o in outs]
            key = f"diag overlap={overlap} batch {batch_size}"
            same = tokens == report.get(f"tokens {batch_size}", tokens)
            report[f"tokens {batch_size}"] = tokens
            report[key] = dict(tok_s=n / dt, same_tokens_as_overlap=same)
            print(f"[{key}] 128/128: {n / dt:.0f} tok/s; greedy tokens equal to the overlapped run: {same}", flush=True)
        key = f"diag overlap={overlap}"
        report[key] = dict(ttft_ms=sorted(ttfts[1:])[2])
        print(f"[{key}] TTFT 1000 tokens median {sorted(ttfts[1:])[2]:.1f} ms {[round(x, 1) for x in ttfts]}",
              flush=True)
    runner.supports_overlap = True
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        llm.generate([[999] + long_prompt[1:]], SamplingParams(max_tokens=1), use_tqdm=False)
        wall = time.perf_counter() - t
    events = prof.key_averages()
    cuda_total = sum(e.self_device_time_total for e in events) / 1e3
    print(f"[profile prefill 1000] wall {wall * 1e3:.1f} ms, kernels {cuda_total:.1f} ms", flush=True)
    print(events.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=50), flush=True)
    llm.shutdown()
    del llm, runner, prof, events
    import gc
    gc.collect()
    torch.cuda.empty_cache()
    for k in [k for k in report if k.startswith("tokens ")]:
        del report[k]


def profile_offline(report: dict, input_len: int = 128, output_len: int = 128, num_requests: int = 1024,
                    max_batch: int = 512, fp8: bool = False) -> None:
    """GPU busy time of an offline run (torch profiler over the whole run), by kernel family, and the
    top kernels; fp8: FP8 weights and KV cache (issue 9's offline targets)."""
    from torch.profiler import ProfilerActivity, profile

    from tritium import BuildConfig, SamplingParams
    from tritium.llm.llm import LLM
    from tritium.quantization import QuantConfig

    folder = tempfile.mkdtemp()
    shutil.copy(LLAMA_8B, os.path.join(folder, "config.json"))
    quant = QuantConfig(quant_algo="FP8", kv_cache_quant_algo="FP8") if fp8 else None
    llm = LLM(folder, load_format="dummy", quant_config=quant,
              build_config=BuildConfig(max_batch_size=max_batch, max_num_tokens=8192,
                                       max_seq_len=input_len + output_len + 16))
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(10, 120000, (input_len,), generator=g).tolist() for _ in range(num_requests)]
    params = SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True)
    llm.generate(prompts[:64], params, use_tqdm=False)  # warm every kernel specialisation
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        llm.generate(prompts[64:], params, use_tqdm=False)
        wall = time.perf_counter() - t
    families: dict[str, float] = {}
    events = prof.key_averages()
    for e in events:
        name = e.key
        fam = ("gemm" if ("nvjet" in name or "gemm" in name.lower() or "cublas" in name.lower()) else
               "attention" if ("_decode" in name or "_prefill" in name) else
               "fused small ops" if name.startswith("_") else "other")
        families[fam] = families.get(fam, 0.0) + e.self_device_time_total / 1e6
    busy = sum(families.values())
    n = (num_requests - 64) * output_len
    tag = f"{input_len}/{output_len} x{num_requests - 64} bs{max_batch}{' FP8+FP8 KV' if fp8 else ''}"
    report[f"profile offline {tag}"] = dict(wall_s=wall, kernel_s=busy, families_s=families, tok_s=n / wall)
    print(f"[profile offline {tag}] wall {wall:.1f} s "
          f"({n / wall:.0f} tok/s under the profiler), kernels {busy:.1f} s ({100 * busy / wall:.0f}% busy): "
          + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(families.items(), key=lambda kv: -kv[1])), flush=True)
    print(events.table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=70),
          flush=True)
    llm.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference-tokens", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--sections", default="tiny,kernels,speed,eager,offline,profile,cold")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    if args.reference_tokens:  # subprocess: the torch reference path (TRITIUM_TRITON=0)
        from tests.utils.tiny_models import make_tiny_checkpoint  # noqa: F401
        vocab = json.load(open(os.path.join(args.reference_tokens, "config.json")))["vocab_size"]
        print(json.dumps(engine_tokens(args.reference_tokens, tiny_prompts(vocab), enforce_eager=True)))
        return
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    report: dict = {}
    sections = args.sections.split(",")
    import logging
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("tritium").setLevel(logging.INFO)
    if "diag" in sections:
        diagnose_prefill(report)
    if "imports" in sections:
        for mod in ("torch", "transformers", "tritium.llm.llm", "triton"):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", f"import {mod}"], cwd=ROOT, check=True)
            print(f"[import] {mod}: {time.perf_counter() - t:.1f} s in a fresh process", flush=True)
    if "tiny" in sections:
        check_tiny_families(report)
    if "kernels" in sections:
        check_kernels_real_sizes(report)
    if "speed" in sections:
        llama_8b_speed(report, enforce_eager=False)
    if "speed-cublas" in sections:  # the same without the streaming Triton GEMM (cuBLAS for every shape)
        os.environ["TRITIUM_STREAMING_GEMM"] = "0"
        llama_8b_speed(report, enforce_eager=False, tag="graphs, cuBLAS only")
        del os.environ["TRITIUM_STREAMING_GEMM"]
    if "profile" in sections:
        profile_decode(report, 1)
        profile_decode(report, 64)
    if "profile-quant" in sections:  # batch-1 decode of the quantized weights (issue 9's targets)
        for algo in ("FP8", "W4A16"):
            profile_decode(report, 1, algo)
    if "profile-prefill" in sections:  # one 467-token prefill (the serving TTFT's largest part)
        profile_decode(report, 1, prompt_len=467, max_tokens=1)
    if "prefill-loop" in sections:  # 467-token prefills one after another (py-spy attaches: prefill-spy stage)
        prefill_loop(report)
    if "prefill-timeline" in sections:  # a lone prompt's way to its first token, stamped
        for decoding in (0, 2):
            prefill_timeline(report, tag=f"{decoding} decoding", decoding=decoding)
    if "prefill-ab" in sections:  # the same with and without the prefill CUDA graphs
        prefill_loop(report, seconds=10.0, tag="prefill graphs")
        os.environ["TRITIUM_PREFILL_GRAPHS"] = "0"
        prefill_loop(report, seconds=10.0, tag="eager prefill")
        del os.environ["TRITIUM_PREFILL_GRAPHS"]
    if "offline" in sections:
        offline_throughput(report, 128, 128, 4096, 512)
        offline_throughput(report, 1000, 1000, 1024, 512)
    if "profile-offline" in sections:
        profile_offline(report)
    if "profile-offline-fp8" in sections:  # where a 1000/1000 FP8 step's time goes (issue 9's target)
        profile_offline(report, 1000, 1000, 576, 512, fp8=True)
    if "offline-big" in sections:
        offline_throughput(report, 128, 128, 8192, 1024)
        offline_throughput(report, 128, 128, 8192, 2048)
    if "eager" in sections:
        llama_8b_speed(report, enforce_eager=True)
    if "cold" in sections:
        cold_start(report)
    with open(os.path.join(args.out, "gpu_speed_check.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
