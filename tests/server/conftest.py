"""Real `tritium serve` processes on 127.0.0.1 for the server tests.

`server` (the embedded SmolLM2 in float32) starts once per session and is shared: its startup is
the expensive part. Tests that end a server (SIGTERM drain, engine death) or need other flags
start their own on a tiny random checkpoint, which loads in a few seconds.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

import httpx
import pytest

from tests.utils.tiny_models import make_tiny_checkpoint

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_NAME = "smollm2"
MAX_SEQ_LEN = 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m tritium.entrypoints.cli serve ARGS` (or a python -c script) on a free port."""

    def __init__(self, args: list[str], log_path: str, script: Optional[str] = None):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        argv = ["serve", "--port", str(self.port), *args]
        cmd = ([sys.executable, "-c", script, *argv] if script else
               [sys.executable, "-m", "tritium.entrypoints.cli", *argv])
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)

    def wait_ready(self, timeout: float = 180.0) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before it was ready:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = ServerProcess(["--served-model-name", MODEL_NAME, "--dtype", "float32", "--max-seq-len", str(MAX_SEQ_LEN),
                         "--max-batch-size", "96", "--max-num-tokens", "2048"],
                        str(tmp_path_factory.mktemp("server") / "server.log"))
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    return str(make_tiny_checkpoint("llama", tmp_path_factory.mktemp("tiny_server_llama")))


@pytest.fixture
def start_tiny_server(tiny_checkpoint, tmp_path):
    """Factory: a server on the tiny checkpoint with extra flags; stopped at the test's end."""
    started: list[ServerProcess] = []

    def start(*args: str, script: Optional[str] = None) -> ServerProcess:
        srv = ServerProcess([tiny_checkpoint, "--dtype", "float32", *args],
                            str(tmp_path / f"tiny{len(started)}.log"), script=script)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
