"""`tritium bench ...`: argparse -> settings dataclasses -> tritium.bench. No benchmark logic here.

Subcommands live in BENCH_COMMANDS (name -> BenchCommand); a new one (e.g. `serve`) adds an entry
with its own add_arguments / run.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable

from tritium.entrypoints.cli import _add_model_args, _opt

EXAMPLES = """\
examples:
  tritium bench prepare-dataset token-norm-dist --num-requests 100 --input-mean 128 --output-mean 128 \\
      --vocab-size 128256 --output data.jsonl
  tritium bench throughput --model llama-3.1-8b --load-format dummy --dataset data.jsonl --report-json r.json
  tritium bench throughput --dataset data.jsonl --backend transformers   # the baseline, same requests
  tritium bench latency --model llama-3.1-8b --load-format dummy --batch-size 1 --input-len 128 --output-len 128
  tritium bench serve --base-url http://127.0.0.1:8000 --dataset data.jsonl --max-concurrency 64   # a running server
"""


@dataclass(frozen=True)
class BenchCommand:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ---- prepare-dataset ----------------------------------------------------------------------------
def _add_length_args(p: argparse.ArgumentParser) -> None:
    _opt(p, "--num-requests", type=int, required=True)
    for side in ("input", "output"):
        _opt(p, f"--{side}-mean", type=float, required=True, help=f"mean {side} tokens per request")
        _opt(p, f"--{side}-stdev", type=float, default=0.0, help=f"standard deviation of {side} tokens (default 0)")
    _opt(p, "--seed", type=int, default=0, help="random seed (the same seed writes the same dataset)")
    _opt(p, "--output", default=None, help="JSONL file to write (default: stdout)")


def _add_prepare_dataset_args(p: argparse.ArgumentParser) -> None:
    kinds = p.add_subparsers(dest="dataset_kind", metavar="KIND", required=True)
    norm = kinds.add_parser("token-norm-dist", help="random token ids, normally distributed lengths")
    _add_length_args(norm)
    vocab = norm.add_mutually_exclusive_group(required=True)
    _opt(vocab, "--vocab-size", type=int, help="token ids are drawn from [0, vocab-size)")
    _opt(vocab, "--tokenizer", help="tokenizer (folder, .gguf or hub id): its vocabulary less special tokens")
    text = kinds.add_parser("text", help="prompts cut from a text file at random token offsets")
    _add_length_args(text)
    _opt(text, "--text-file", required=True, help="UTF-8 text, e.g. a book")
    _opt(text, "--tokenizer", default=None, help="tokenizer (folder, .gguf or hub id); default: the embedded model's")


def _load_tokenizer(path):
    from tritium.default_model import default_model_path
    from tritium.loader import load_tokenizer

    return load_tokenizer(None, path or default_model_path())


def _run_prepare_dataset(args: argparse.Namespace) -> int:
    from tritium.bench import dataset as ds

    input_dist = ds.LengthDist("input", args.input_mean, args.input_stdev)
    output_dist = ds.LengthDist("output", args.output_mean, args.output_stdev)
    if args.num_requests < 1:
        raise ValueError(f"--num-requests must be at least 1, got {args.num_requests}")
    if args.dataset_kind == "token-norm-dist":
        if args.tokenizer is not None:
            tok = _load_tokenizer(args.tokenizer)
            vocab_size, special = tok.vocab_size, tok.all_special_ids
        else:
            vocab_size, special = args.vocab_size, ()
        requests = ds.token_norm_dist(args.num_requests, input_dist, output_dist, vocab_size, args.seed, special)
    else:
        text = ds.read_text_file(args.text_file)  # before the tokenizer: a bad path fails fast
        tok = _load_tokenizer(args.tokenizer)
        text_ids = tok(text, add_special_tokens=False)["input_ids"]
        requests = ds.text_windows(text_ids, tok, args.num_requests, input_dist, output_dist, args.seed)
    if args.output is None:
        ds.write_jsonl(requests, sys.stdout)
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            ds.write_jsonl(requests, f)
        print(f"wrote {len(requests)} requests to {args.output}", file=sys.stderr)
    return 0


# ---- throughput / latency -----------------------------------------------------------------------
def _add_run_args(p: argparse.ArgumentParser) -> None:
    from tritium.bench.session import BACKENDS

    _add_model_args(p)
    g = p.add_argument_group("benchmark")
    _opt(g, "--backend", default="tritium", choices=BACKENDS,
         help="transformers: the Hugging Face generate baseline on the same model, dtype and requests")
    _opt(g, "--streaming", action="store_true", help="stream each request and time tokens as the client sees them")
    _opt(g, "--enforce-eager", action="store_true", help="tritium on a GPU: run without CUDA graphs")
    _opt(g, "--report-json", default=None, help="also write the report as JSON to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="log engine set-up")


def _engine_spec(args: argparse.Namespace):
    from tritium.bench.spec import EngineSpec
    from tritium.entrypoints.cli import quant_configs
    from tritium.entrypoints.extra_options import read_extra_options

    quant, calib = quant_configs(args)
    return EngineSpec(quant_config=quant, calib_config=calib,
        extra_llm_api_options=read_extra_options(args.extra_llm_api_options) or None,
        extra_llm_api_options_path=args.extra_llm_api_options,
        model=args.model, tokenizer=args.tokenizer, dtype=args.dtype, load_format=args.load_format,
        device=args.device, max_batch_size=args.max_batch_size, max_num_tokens=args.max_num_tokens,
        max_seq_len=args.max_seq_len, kv_cache_free_gpu_memory_fraction=args.kv_cache_free_gpu_memory_fraction,
        kv_cache_max_tokens=args.kv_cache_max_tokens, enable_prefix_caching=not args.disable_prefix_caching,
        enable_chunked_prefill=not args.disable_chunked_prefill, enforce_eager=args.enforce_eager,
        capacity_scheduler_policy=args.capacity_scheduler_policy)


def _print_report(report: dict, json_path) -> None:
    from tritium.bench.report import format_report, write_json

    print(format_report(report))
    if json_path:
        write_json(report, json_path)
        print(f"\nreport written to {json_path}", file=sys.stderr)


def _add_throughput_args(p: argparse.ArgumentParser) -> None:
    _opt(p, "--dataset", required=True, help="JSONL from `tritium bench prepare-dataset` (trtllm-bench's format)")
    _opt(p, "--num-requests", type=int, default=None, help="use the dataset's first N requests")
    _opt(p, "--concurrency", type=int, default=None, help="at most N requests in flight (default: all at once)")
    _opt(p, "--warmup", type=int, default=2, help="unmeasured warm-up requests first (default 2)")
    _add_run_args(p)


def _run_throughput(args: argparse.Namespace) -> int:
    from tritium.bench.throughput import ThroughputSettings, run_throughput

    settings = ThroughputSettings(dataset=args.dataset, backend=args.backend, num_requests=args.num_requests,
                                  concurrency=args.concurrency, streaming=args.streaming, warmup=args.warmup)
    run_throughput(_engine_spec(args), settings, publish=lambda report: _print_report(report, args.report_json))
    return 0


def _add_latency_args(p: argparse.ArgumentParser) -> None:
    _opt(p, "--batch-size", type=int, default=1, help="requests per iteration, submitted together")
    _opt(p, "--input-len", type=int, default=128, help="prompt tokens per request (random ids)")
    _opt(p, "--output-len", type=int, default=128, help="output tokens per request (EOS ignored)")
    _opt(p, "--iterations", type=int, default=10, help="measured iterations")
    _opt(p, "--warmup", type=int, default=2, help="unmeasured iterations first (default 2)")
    _opt(p, "--seed", type=int, default=0, help="seed of the random prompts")
    _add_run_args(p)


def _run_latency(args: argparse.Namespace) -> int:
    from tritium.bench.latency import LatencySettings, run_latency

    settings = LatencySettings(backend=args.backend, batch_size=args.batch_size, input_len=args.input_len,
                               output_len=args.output_len, iterations=args.iterations, warmup=args.warmup,
                               streaming=args.streaming, seed=args.seed)
    run_latency(_engine_spec(args), settings, publish=lambda report: _print_report(report, args.report_json))
    return 0


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    from tritium.bench.serve import add_arguments

    add_arguments(p)


def _run_serve(args: argparse.Namespace) -> int:
    from tritium.bench.serve import run

    return run(args)


BENCH_COMMANDS: dict[str, BenchCommand] = {
    "prepare-dataset": BenchCommand("write a benchmark dataset (JSON lines)", _add_prepare_dataset_args,
                                    _run_prepare_dataset),
    "throughput": BenchCommand("offline throughput on a dataset", _add_throughput_args, _run_throughput),
    "latency": BenchCommand("fixed-batch latency: TTFT and decode speed", _add_latency_args, _run_latency),
    "serve": BenchCommand("load an OpenAI-compatible server: TTFT / TPOT / ITL percentiles and throughput",
                          _add_serve_args, _run_serve),
}


def add_bench_parser(commands) -> None:
    """Register `tritium bench` and its subcommands on the top-level subparsers."""
    bench = commands.add_parser("bench", help="benchmarks: datasets, offline throughput, latency, serving",
                                description="Measure tritium (or the transformers baseline) like trtllm-bench.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    subs = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    for name, cmd in BENCH_COMMANDS.items():
        cmd.add_arguments(subs.add_parser(name, help=cmd.help, description=cmd.help))


def run_bench(args: argparse.Namespace) -> int:
    try:
        return BENCH_COMMANDS[args.bench_command].run(args)
    except (ValueError, FileNotFoundError) as e:  # bad arguments, files, models: say what, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
