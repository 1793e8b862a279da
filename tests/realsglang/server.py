"""A real SGLang server (PyPI's SGLang made to serve on CPU: scripts/setup-sglang) on loopback,
serving the tiny local model the real-vLLM tests build."""

from __future__ import annotations

from pathlib import Path

from tests.realvllm import server as vllm_server
from tests.realvllm.server import SERVED_NAME, LoopbackServer

VERSION = "0.5.23"
HERE = Path(__file__).resolve().parent


def venv_python() -> Path:
    return vllm_server.cache_root() / f"sglang-{VERSION}" / "bin" / "python"


def ready() -> bool:
    root = vllm_server.cache_root()
    return (root / f"sglang-{VERSION}" / ".ready").exists() and (
        root / "tiny-llama" / ".ready"
    ).exists()


class SglangServer(LoopbackServer):
    """``sglang.launch_server`` on CPU. ``max_running``: --max-running-requests (SGLang's
    counterpart of vLLM's --max-num-seqs); ``env``: SGLang's own settings from the
    environment, for this server."""

    name = "SGLang"

    def __init__(
        self, *flags: str, log: Path, max_running: int = 8, env: dict[str, str] | None = None
    ) -> None:
        super().__init__(log)
        self.flags = flags
        self.extra_env = env or {}
        self.max_running = max_running

    def environment(self) -> dict[str, str]:
        return {
            **super().environment(),
            "SGLANG_USE_CPU_ENGINE": "1",
            # The stand-in CPU kernel package (tests/realsglang/sgl_kernel) comes first.
            "PYTHONPATH": str(HERE),
            **self.extra_env,
        }

    def command(self) -> list[str]:
        return [
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
