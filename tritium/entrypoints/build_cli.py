"""`tritium build`: quantize / calibrate a checkpoint once and save the engine folder (trtllm-build's
role); `--dry-run` prints the memory plan a GPU would get, from config.json alone.

    tritium build ./Llama-3.1-8B-Instruct --output ./llama-fp8 --quantization FP8 --kv-cache-dtype fp8
    tritium generate --model ./llama-fp8 --chat "Hello"          # loads without re-quantizing
    tritium build --dry-run llama-3.1-8b --gpu-memory 80GiB --quantization W4A16 --max-seq-len 8192
"""
from __future__ import annotations

import argparse
import os
import time

EXAMPLES = """\
examples:
  tritium build ./Llama-3.1-8B-Instruct --output ./llama-fp8 --quantization FP8 --kv-cache-dtype fp8
  tritium build ./Llama-3.1-8B-Instruct --output ./llama-awq --quantization W4A16_AWQ --calib-file my.txt
  tritium build --dry-run ./Llama-3.1-8B-Instruct --gpu-memory 80GiB --quantization FP8 --max-seq-len 8192
  tritium build --dry-run llama-3.1-8b --gpu-memory 141GiB   # a packaged model shape
"""


def add_parser(subparsers) -> None:
    from tritium.entrypoints.cli import _add_model_args, _opt

    p = subparsers.add_parser("build", help="quantize / calibrate a model once and save the engine folder",
                              description="Build an engine folder (quantized weights, configs, memory plan, "
                                          "tokenizer) that `--model <folder>` loads without re-quantizing.",
                              epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_tag", nargs="?", default=None, metavar="MODEL",
                   help="HF folder, .gguf file, config folder or packaged shape name (same as --model)")
    g = p.add_argument_group("build")
    _opt(g, "--output", "-o", default=None, help="the engine folder to write (replaced if it holds an engine)")
    _opt(g, "--dry-run", action="store_true", help="print the memory plan from config.json alone and exit")
    _opt(g, "--gpu-memory", default="80GiB", help="--dry-run: the GPU's memory (default 80GiB)")
    p.add_argument("-v", "--verbose", action="store_true", help="log engine set-up")
    _add_model_args(p)


def run_build(args: argparse.Namespace) -> int:
    from tritium.entrypoints.cli import llm_kwargs

    if args.model_tag is not None:
        if args.model is not None and args.model != args.model_tag:
            raise ValueError(f"two models given: {args.model_tag!r} and --model {args.model!r}")
        args.model = args.model_tag
    kwargs = llm_kwargs(args)
    if args.dry_run:
        return _dry_run(args, kwargs)
    if not args.output:
        raise ValueError("--output <folder> is required (or --dry-run)")
    from tritium.llm.llm import LLM

    start = time.perf_counter()
    with LLM(model=args.model, **kwargs) as llm:
        built = time.perf_counter()
        llm.save(args.output)
        from tritium.worker.memory_plan import describe_memory

        plan = describe_memory(llm._parts.memory_plan)
    print(f"built in {built - start:.1f} s, saved in {time.perf_counter() - built:.1f} s: {args.output}")
    print(plan)
    return 0


def _dry_run(args: argparse.Namespace, kwargs: dict) -> int:
    import torch

    from tritium.bench.model_shapes import resolve_model_arg
    from tritium.config import ModelConfig, resolve_dtype
    from tritium.entrypoints.extra_options import resolve_llm_kwargs
    from tritium.loader.source import resolve_model_source
    from tritium.worker.memory_estimate import estimate_memory, parse_size
    from tritium.worker.memory_plan import describe_memory

    quant = kwargs["quant_config"]
    source = resolve_model_source(resolve_model_arg(args.model, "dummy"), "dummy")  # config.json only
    config_dtype = source.hf_config.get("torch_dtype") or source.hf_config.get("dtype")
    model = ModelConfig.from_hf(source.hf_config, dtype=resolve_dtype(args.dtype, config_dtype, torch.device("cuda")))
    if quant is None and os.path.isdir(source.path):  # a pre-quantized checkpoint brings its own
        from tritium.quantization.hf_checkpoints import detect

        ckpt = detect(source.path, source.hf_config)
        quant = ckpt.quant_config if ckpt is not None else None
    gpu = parse_size(args.gpu_memory)
    build, kv, _, options = resolve_llm_kwargs(kwargs)  # as the engine would, --extra-llm-api-options included
    plan = estimate_memory(model, gpu, build, kv, quant, cuda_graphs=not options.enforce_eager,
                           cuda_graph_config=options.cuda_graph_config)
    q = quant.to_dict() if quant is not None else {}
    print(f"{args.model or 'the embedded model'} ({model.architecture}, {str(model.dtype).replace('torch.', '')}, "
          f"quantization {q.get('quant_algo') or 'none'}, KV cache {q.get('kv_cache_quant_algo') or 'model dtype'}) "
          f"on a GPU of {gpu / 2**30:.1f} GiB, from config.json alone:")
    print(describe_memory(plan))
    return 0
