"""The FastAPI app and its uvicorn runner.

Life of a server:
    STARTING  uvicorn listens at once; the engine loads in a worker thread (/health: 503)
    READY     requests are served (/health: 200)
    DRAINING  after SIGTERM: no new requests (503), in-flight ones finish or are aborted after
              --drain-timeout; then the server exits 0 (a second SIGTERM or a SIGINT: at once)
    DEAD      the engine thread died, or loading failed: /health 503, open requests fail, and
              the process exits 1
"""
from __future__ import annotations

import asyncio
import enum
import logging
import signal
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Callable, Optional

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tritium.entrypoints.openai.errors import OpenAIError, from_validation_error, internal_error
from tritium.entrypoints.openai.metrics import ServerMetrics
from tritium.entrypoints.openai.protocol import (ChatCompletionRequest, CompletionRequest, DetokenizeRequest,
                                                 DetokenizeResponse, ModelCard, ModelList, TokenizeRequest,
                                                 TokenizeResponse, VersionResponse)
from tritium.entrypoints.openai.serving_chat import OpenAIServingChat
from tritium.entrypoints.openai.serving_completions import OpenAIServingCompletion
from tritium.entrypoints.openai.serving_engine import RequestTracker

logger = logging.getLogger("tritium.serve")

_PROTECTED_PREFIXES = ("/v1/", "/tokenize", "/detokenize")
_ENGINE_WATCH_INTERVAL_S = 0.2
_ENGINE_FAILURE_WAIT_S = 6.0  # an engine process reaps its child within 5 s (EngineProcess._fail_all)


class Health(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    DEAD = "dead"


@dataclass
class ServerConfig:
    load_llm: Callable[[], object]  # builds the LLM (runs in a worker thread)
    served_model_name: str
    api_key: Optional[str] = None
    max_queued_requests: Optional[int] = None
    max_batch_size: int = 256
    chat_template: Optional[str] = None
    drain_timeout_s: float = 30.0
    tool_call_parser: Optional[str] = None  # tool_parsers.PARSERS name: tool_choice "auto" reads the model's calls


@dataclass
class ServerState:
    config: ServerConfig
    metrics: ServerMetrics
    health: Health = Health.STARTING
    llm: object = None
    tracker: Optional[RequestTracker] = None
    completions: Optional[OpenAIServingCompletion] = None
    chat: Optional[OpenAIServingChat] = None
    exit_code: int = 0
    request_exit: Callable[[], None] = lambda: None  # set by the runner: stop uvicorn
    tasks: list = field(default_factory=list)

    def ready(self) -> None:
        """Raise the right 503 unless requests can be served now."""
        if self.health is Health.READY:
            return
        reason = {Health.STARTING: "the model is still loading",
                  Health.DRAINING: "the server is shutting down and takes no new requests",
                  Health.DEAD: "the engine has stopped"}[self.health]
        self.metrics.record_rejection(self.health.value)
        raise OpenAIError(503, reason, retry_after=5 if self.health is not Health.DEAD else None)

    # ---- transitions ----------------------------------------------------------------------
    async def load(self) -> None:
        try:
            llm = await asyncio.get_running_loop().run_in_executor(None, self.config.load_llm)
        except Exception as e:  # noqa: BLE001 - a model that cannot load ends the server
            logger.error("the engine failed to start: %s: %s", type(e).__name__, e)
            self.die()
            return
        if self.config.chat_template is not None and llm.tokenizer is not None:
            llm.tokenizer.chat_template = self.config.chat_template
        self.llm = llm
        self.metrics.llm = llm
        self.tracker = RequestTracker(self.config.max_queued_requests, self.config.max_batch_size, self.metrics)
        names = [self.config.served_model_name]
        self.completions = OpenAIServingCompletion(llm, names, self.tracker, self.metrics)
        self.chat = OpenAIServingChat(llm, names, self.tracker, self.metrics,
                                      tool_call_parser=self.config.tool_call_parser)
        if self.health is Health.STARTING:
            self.health = Health.READY
            logger.info("ready: serving %s", self.config.served_model_name)
        self.tasks.append(asyncio.ensure_future(self._watch_engine()))

    async def _watch_engine(self) -> None:
        while self.health in (Health.READY, Health.DRAINING):
            if not self.llm._engine.is_alive:
                failure = await self._engine_failure()
                logger.error("the engine has stopped; failing %d open requests and exiting",
                             self.tracker.num_in_flight)
                self.tracker.fail_all(failure)
                self.die()
                return
            await asyncio.sleep(_ENGINE_WATCH_INTERVAL_S)

    async def _engine_failure(self) -> BaseException:
        """Why the engine stopped, as it tells its own requests (engine.failure): an engine thread
        says so as it dies, an engine process once it has reaped the child and failed its requests
        with the exit code (this must not race it with a vaguer error); a generic error when the
        engine says nothing in time."""
        engine = self.llm._engine
        deadline = time.monotonic() + _ENGINE_FAILURE_WAIT_S
        while engine.failure is None and time.monotonic() < deadline:
            await asyncio.sleep(_ENGINE_WATCH_INTERVAL_S / 4)
        return engine.failure or RuntimeError("the engine has stopped")

    def die(self) -> None:
        self.health = Health.DEAD
        self.exit_code = 1
        self.request_exit()

    def drain(self) -> None:
        if self.health in (Health.DRAINING, Health.DEAD):
            return
        was_ready = self.health is Health.READY
        self.health = Health.DRAINING
        if not was_ready:  # nothing in flight yet
            self.request_exit()
            return
        self.tracker.draining = True
        self.tasks.append(asyncio.ensure_future(self._drain()))

    async def _drain(self) -> None:
        logger.info("draining %d in-flight requests (at most %.0f s)", self.tracker.num_in_flight,
                    self.config.drain_timeout_s)
        try:
            await asyncio.wait_for(self.tracker.wait_idle(), self.config.drain_timeout_s)
        except asyncio.TimeoutError:
            logger.warning("drain timeout: aborting %d requests", self.tracker.num_in_flight)
            self.tracker.abort_all()
            try:
                await asyncio.wait_for(self.tracker.wait_idle(), 5.0)
            except asyncio.TimeoutError:
                pass
        self.request_exit()

    def shutdown(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.llm is not None:
            self.llm.shutdown()


def build_app(config: ServerConfig) -> FastAPI:
    from tritium import __version__

    state = ServerState(config=config, metrics=ServerMetrics(config.served_model_name))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.tasks.append(asyncio.ensure_future(state.load()))
        yield
        state.shutdown()

    app = FastAPI(title="tritium OpenAI-compatible server", version=__version__, lifespan=lifespan)
    app.state.server = state
    _install_error_handlers(app)

    if config.api_key is not None:
        app.add_middleware(_ApiKeyMiddleware, api_key=config.api_key)

    @app.get("/health")
    async def health():
        if state.health is Health.READY:
            return {"status": "ok"}
        return OpenAIError(503, f"the server is {state.health.value}",
                           retry_after=None if state.health is Health.DEAD else 5).response()

    @app.get("/version", response_model=VersionResponse)
    async def version():
        return VersionResponse(version=__version__)

    @app.get("/metrics")
    async def metrics():
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", response_model=ModelList)
    async def models():
        state.ready()
        return ModelList(data=[ModelCard(id=config.served_model_name, root=str(state.llm.model_path),
                                         max_model_len=state.llm.max_seq_len)])

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest, raw_request: Request):
        state.ready()
        return await state.completions.create(request, raw_request)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest, raw_request: Request):
        state.ready()
        return await state.chat.create(request, raw_request)

    @app.post("/tokenize", response_model=TokenizeResponse)
    async def tokenize(request: TokenizeRequest):
        state.ready()
        chat = state.chat
        chat.check_model(request.model)
        if (request.prompt is None) == (request.messages is None):
            raise OpenAIError(400, "give exactly one of prompt or messages", param="prompt")
        if state.llm.tokenizer is None:
            raise OpenAIError(400, "this model has no tokenizer")
        text = request.prompt if request.prompt is not None else chat.render(request.messages)
        tokens = state.llm.tokenizer.encode(text, add_special_tokens=request.add_special_tokens
                                            and request.messages is None)
        return TokenizeResponse(count=len(tokens), max_model_len=state.llm.max_seq_len, tokens=tokens)

    @app.post("/detokenize", response_model=DetokenizeResponse)
    async def detokenize(request: DetokenizeRequest):
        state.ready()
        state.chat.check_model(request.model)
        if state.llm.tokenizer is None:
            raise OpenAIError(400, "this model has no tokenizer")
        vocab = state.llm.model_config.vocab_size
        bad = [t for t in request.tokens if not 0 <= t < vocab]
        if bad:
            raise OpenAIError(400, f"token id {bad[0]} is outside the vocabulary [0, {vocab})", param="tokens")
        return DetokenizeResponse(prompt=state.llm.tokenizer.decode(request.tokens))

    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def openai_error(_, exc: OpenAIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_, exc: RequestValidationError):
        return from_validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_, exc: StarletteHTTPException):
        return OpenAIError(exc.status_code, str(exc.detail)).response()

    @app.exception_handler(Exception)
    async def unexpected(_, exc: Exception):
        logger.exception("request failed")
        return internal_error(exc).response()


class _ApiKeyMiddleware:
    """401 on /v1, /tokenize and /detokenize without `Authorization: Bearer <key>` (probes stay open).
    Plain ASGI: a BaseHTTPMiddleware would copy every streamed chunk through an extra queue."""

    def __init__(self, app, api_key: str):
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(_PROTECTED_PREFIXES):
            if dict(scope["headers"]).get(b"authorization") != self.expected:
                response = OpenAIError(401, "invalid or missing API key (send Authorization: Bearer <key>)",
                                       code="invalid_api_key").response()
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Server(uvicorn.Server):
    """uvicorn that drains on the first SIGTERM instead of closing at once."""

    def __init__(self, config: uvicorn.Config, state: ServerState):
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig, frame) -> None:
        if sig == signal.SIGTERM and self.state.health is not Health.DRAINING and not self.should_exit:
            asyncio.get_event_loop().call_soon_threadsafe(self.state.drain)
            return
        super().handle_exit(sig, frame)


def run_server(config: ServerConfig, host: str, port: int, log_level: str = "info") -> int:
    """Serve until drained or dead; returns the process exit code."""
    app = build_app(config)
    state: ServerState = app.state.server
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_keep_alive=30,
                                    timeout_graceful_shutdown=5), state)

    def request_exit() -> None:
        server.should_exit = True

    state.request_exit = request_exit
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it handled, once it has shut down
        return 130
    return state.exit_code
