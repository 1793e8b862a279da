"""A real SGLang server (PyPI's SGLang made to serve on CPU: scripts/setup-sglang) on loopback,
serving the tiny local model the real-vLLM tests build."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from tests.harness import free_port, wait_for
from tests.realvllm import server as vllm_server
from tests.realvllm.server import SERVED_NAME

VERSION = "0.5.23"
HERE = Path(__file__).resolve().parent


def venv_python() -> Path:
    return vllm_server.cache_root() / f"sglang-{VERSION}" / "bin" / "python"


def ready() -> bool:
    root = vllm_server.cache_root()
    return (root / f"sglang-{VERSION}" / ".ready").exists() and (
        root / "tiny-llama" / ".ready"
    ).exists()


class SglangServer:
    """``sglang.launch_server`` on CPU. ``max_running``: --max-running-requests (SGLang's
    counterpart of vLLM's --max-num-seqs)."""

    def __init__(
        self, *flags: str, log: Path, max_running: int = 8, env: dict[str, str] | None = None
    ) -> None:
        """``env``: SGLang's own settings from the environment, for this server."""
        self.flags = flags
        self.extra_env = env or {}
        self.log = log
        self.max_running = max_running
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300.0) -> float:
        """Start and wait until it answers a completion; returns the seconds it took."""
        t0 = time.monotonic()
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "SGLANG_USE_CPU_ENGINE": "1",
            # The stand-in CPU kernel package (tests/realsglang/sgl_kernel) comes first.
            "PYTHONPATH": str(HERE),
            "DO_NOT_TRACK": "1",
            **self.extra_env,
        }
        cmd = [
            str(venv_python()), "-m", "sglang.launch_server",
            "--model-path", str(vllm_server.cache_root() / "tiny-llama"),
            "--served-model-name", SERVED_NAME,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--device", "cpu", "--attention-backend", "torch_native",
            "--disable-overlap-schedule", "--disable-cuda-graph", "--enable-metrics",
            "--context-length", "1024", "--max-total-tokens", "16384", "--dtype", "bfloat16",
            "--max-running-requests", str(self.max_running),
            *self.flags,
        ]  # fmt: skip
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"SGLang exited {self.proc.returncode}; see {self.log}")
            return requests.get(self.url + "/health", timeout=2).status_code == 200

        wait_for(healthy, timeout, f"SGLang to be healthy (log: {self.log})", every=1.0)
        return time.monotonic() - t0

    def stop(self) -> None:
        """SIGINT, then the whole process group (the scheduler and detokenizer processes)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
