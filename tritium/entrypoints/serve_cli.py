"""`tritium serve`: argparse -> ServerConfig -> run_server. Flags follow vLLM and trtllm-serve.

    tritium serve                                   # the embedded SmolLM2-135M-Instruct on 127.0.0.1:8000
    tritium serve ./Llama-3.1-8B-Instruct --port 8001 --api-key secret --max-queued-requests 512
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"

EXAMPLES = """\
examples:
  tritium serve
  tritium serve ./Llama-3.1-8B-Instruct --served-model-name llama --port 8001
  tritium serve ./configs/llama-3.1-8b --load-format dummy --max-batch-size 512 --max-queued-requests 1024

then:  curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
           -d '{"prompt": "The capital of France is", "max_tokens": 8}'
"""


def add_parser(subparsers) -> None:
    from tritium.entrypoints.cli import _add_model_args, _opt

    p = subparsers.add_parser("serve", help="OpenAI-compatible HTTP server",
                              description="Serve a model over the OpenAI API (/v1/completions, /v1/chat/completions, "
                                          "/v1/models, /health, /metrics, /tokenize, /detokenize, /version).",
                              epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_tag", nargs="?", default=None, metavar="MODEL",
                   help="HF folder, .gguf file or config folder (same as --model)")
    g = p.add_argument_group("server")
    _opt(g, "--host", default="127.0.0.1")
    _opt(g, "--port", type=int, default=8000)
    _opt(g, "--served-model-name", default=None, help="the name clients pass as `model` (default: the model path)")
    _opt(g, "--api-key", default=os.environ.get("TRITIUM_API_KEY"),
         help="require `Authorization: Bearer KEY` on /v1, /tokenize, /detokenize (env TRITIUM_API_KEY)")
    _opt(g, "--max-queued-requests", type=int, default=None,
         help="refuse requests with 503 + Retry-After once this many wait beyond the running batch (default: no limit)")
    _opt(g, "--chat-template", default=None, help="Jinja chat template file (or the template itself)")
    from tritium.entrypoints.openai.tool_parsers import PARSERS

    _opt(g, "--tool-call-parser", default=None, choices=sorted(PARSERS),
         help="read the model's own tool-call text for tool_choice \"auto\" (hermes: Qwen2.5 / Qwen3 / Hermes; "
              "llama3_json: Llama 3.1 / 3.2; mistral); \"required\" and named functions need none")
    _opt(g, "--enable-auto-tool-choice", action="store_true",
         help="vLLM's switch for tool_choice \"auto\", accepted for its command lines: --tool-call-parser alone "
              "turns \"auto\" on; this one needs it")
    _opt(g, "--drain-timeout", type=float, default=30.0,
         help="seconds SIGTERM waits for in-flight requests before aborting them")
    g.add_argument("--engine-process", "--engine_process", action=argparse.BooleanOptionalAction, default=True,
                   help="run the engine's step loop in its own process, so that the HTTP front never delays a "
                        "step (default); --no-engine-process keeps it in a thread of the server's process")
    _opt(g, "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    g.add_argument("--tensor-parallel-size", "--tensor_parallel_size", "--tp-size", "--tp_size", type=int, default=1,
                   dest="tensor_parallel_size")
    _add_model_args(p)


def _chat_template(value):
    if value is None:
        return None
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            return f.read()
    if "{%" in value or "{{" in value:
        return value
    raise ValueError(f"--chat-template {value!r} is neither a file nor a Jinja template")


def run_serve(args) -> int:
    from tritium.entrypoints.openai.api_server import run_server

    config = server_config(args)
    return run_server(config, args.host, args.port, args.log_level)


def server_config(args):
    """The ServerConfig of `tritium serve ARGS` (its load_llm builds the engine later, in the server)."""
    from tritium.entrypoints.cli import llm_kwargs
    from tritium.entrypoints.openai.api_server import ServerConfig

    logging.getLogger("tritium").setLevel(args.log_level.upper())
    if args.model_tag is not None and args.model is not None and args.model_tag != args.model:
        raise ValueError(f"two models given: {args.model_tag!r} and --model {args.model!r}")
    model = args.model_tag or args.model
    if args.tensor_parallel_size != 1:
        raise ValueError(f"--tensor-parallel-size {args.tensor_parallel_size}: only 1 is supported in this version")
    if args.max_queued_requests is not None and args.max_queued_requests < 0:
        raise ValueError("--max-queued-requests must be >= 0")
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is not a TCP port")
    if args.enable_auto_tool_choice and args.tool_call_parser is None:
        raise ValueError("--enable-auto-tool-choice needs --tool-call-parser (hermes, llama3_json or mistral)")
    kwargs = llm_kwargs(args)  # checked here: a bad option fails before the server starts

    def load_llm():
        from tritium.llm.llm import LLM

        return LLM(model=model, engine_process=args.engine_process, **kwargs)

    return ServerConfig(load_llm=load_llm, served_model_name=args.served_model_name or model or DEFAULT_MODEL_NAME,
                        api_key=args.api_key, max_queued_requests=args.max_queued_requests,
                        max_batch_size=args.max_batch_size, chat_template=_chat_template(args.chat_template),
                        drain_timeout_s=args.drain_timeout, tool_call_parser=args.tool_call_parser)


if __name__ == "__main__":  # python -m tritium.entrypoints.serve_cli ...
    from tritium.entrypoints.cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
