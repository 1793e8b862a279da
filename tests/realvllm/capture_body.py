"""Capture one real ``/metrics`` body from a vLLM release: serve the tiny model with that
release's interpreter, send four requests of 16 tokens, save the body.

``python -m tests.realvllm.capture_body VENV_PYTHON OUT.txt`` (scripts/capture-vllm-bodies
builds each release's environment). The bodies are the fixtures in tests/fixtures/vllm/versions.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import requests

from tests.realvllm.server import SERVED_NAME, VllmServer


def main(python: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = VllmServer("--max-num-seqs", "8", log=Path(tmp) / "vllm.log", python=python)
        try:
            server.start(timeout=600)
            for _ in range(4):
                r = requests.post(server.url + "/v1/completions", timeout=120, json={
                    "model": SERVED_NAME, "prompt": "hello world " * 8, "max_tokens": 16,
                    "ignore_eos": True})  # fmt: skip
                r.raise_for_status()
            body = requests.get(server.url + "/metrics", timeout=30,
                                headers={"Accept": "text/plain;version=0.0.4"}).text  # fmt: skip
        finally:
            server.stop()
    out.write_text(body)
    print(f"{out}: {len(body)} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
