"""Real processes on loopback for end-to-end tests: a vLLM endpoint replaying recorded bodies,
the exporter as a subprocess, and a real Prometheus."""

from __future__ import annotations

import gzip
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from tests.tools import require_tool


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range (32768 and up): a port the kernel
    handed out for binding is handed out again as the local end of outgoing connections
    (Prometheus's scrapes, say), and a server started on it later may find it taken."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that does not log every request to stderr."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def reply(self, code: int, body: bytes, ctype: str = "text/plain; version=0.0.4") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """A threaded HTTP server on a free loopback port, for the duration of the block."""
    srv = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def terminate(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (requests.RequestException, KeyError, IndexError, ValueError) as e:
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class RecordedVllm:
    """Serves the bodies of a real vLLM recording at the pace they were recorded.

    The body shown is chosen by wall time since start, so counters advance as they did on the
    real server. ``stop()`` closes the port (connection refused); ``start()`` reopens it with the
    recording's clock still running, like a network outage.
    """

    def __init__(self, recording: Path, max_model_len: int = 1024) -> None:
        self.switch(recording)
        self.models = json.dumps(
            {"object": "list", "data": [{"id": "tiny-llama", "max_model_len": max_model_len}]}
        ).encode()
        self.port = free_port()
        self.requests = 0
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None

    def switch(self, recording: Path) -> None:
        """Serve another recording from its start (like a different server state)."""
        with gzip.open(recording, "rt") as f:
            entries = [json.loads(line) for line in f]
        polls = [e for e in entries if e.get("source") == "vllm" and "body" in e]
        t0 = polls[0]["t"]
        self.bodies = [(e["t"] - t0, e["body"].encode()) for e in polls]
        self._t0 = time.monotonic()

    def body_now(self) -> bytes:
        elapsed = time.monotonic() - self._t0
        chosen = self.bodies[0][1]
        for t, body in self.bodies:
            if t > elapsed:
                break
            chosen = body
        return chosen

    def start(self) -> None:
        owner = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as vLLM's server does

            def setup(self) -> None:
                super().setup()
                owner._connections.add(self.connection)

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                owner.requests += 1
                if self.path == "/metrics":
                    self.reply(200, owner.body_now())
                elif self.path == "/v1/models":
                    self.reply(200, owner.models, "application/json")
                else:
                    self.reply(404, b"not found\n")

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop listening and cut the open keep-alive connections, as a dying server does."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for conn in list(self._connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._connections.clear()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Exporter:
    """``vllm-profile-exporter serve`` as a subprocess on a free loopback port; its log is read
    as it comes, so a test can wait for a line."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        wrap: Callable[[list[str]], list[str]] = lambda cmd: cmd,
    ) -> None:
        self.port = port or free_port()
        self._lines: list[str] = []
        self.proc = subprocess.Popen(
            wrap(
                [
                    sys.executable,
                    "-m",
                    "exporter",
                    "serve",
                    "--web.listen-address",
                    f"127.0.0.1:{self.port}",
                    *args,
                ]
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(self._ready, 30, "the exporter to answer /-/ready")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.append(raw.decode(errors="replace"))

    @property
    def log(self) -> str:
        return "".join(self._lines)

    def wait_log(self, text: str, timeout: float = 20, after: int = 0) -> int:
        """Wait for a log line containing ``text`` (from line ``after`` on); its index."""

        def found() -> int | None:
            for i, line in enumerate(self._lines[after:], after):
                if text in line:
                    return i + 1
            return None

        index: int = wait_for(found, timeout, f"log line {text!r}", every=0.05)
        return index - 1

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            self._reader.join(5)
            raise AssertionError(f"exporter exited {self.proc.returncode}: {self.log}")
        return requests.get(self.url + "/-/ready", timeout=2).status_code == 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        r = requests.get(self.url + "/metrics", timeout=5)
        r.raise_for_status()
        return r.text

    def stop(self) -> str:
        """Stop the exporter; its whole log."""
        terminate(self.proc)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.log


class Prometheus:
    """A real Prometheus (Debian's package) scraping the given targets every second."""

    def __init__(
        self,
        tmp: Path,
        targets: list[str],
        rule_files: Sequence[Path] = (),
        wrap: Callable[[list[str]], list[str]] = lambda cmd: cmd,
        alertmanagers: Sequence[str] = (),
        scrape_extra: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        target_labels: dict[str, dict[str, str]] | None = None,
        flags: Sequence[str] = (),
    ) -> None:
        """``labels``: target labels, as service discovery would add (namespace, pod);
        ``target_labels``: more of them, per target."""
        binary = require_tool("prometheus")
        self.port = free_port()
        cfg: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {
                    "job_name": "vllm-profile",
                    "static_configs": [
                        {
                            "targets": [t],
                            "labels": {**(labels or {}), **(target_labels or {}).get(t, {})},
                        }
                        for t in targets
                    ],
                    **(scrape_extra or {}),
                }
            ],
        }
        if alertmanagers:
            cfg["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]
            }
        (tmp / "prometheus.yml").write_text(json.dumps(cfg))
        self.proc = subprocess.Popen(
            wrap(
                [
                    binary,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    *flags,
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(
            lambda: requests.get(self.url + "/-/ready", timeout=2).status_code == 200,
            30,
            "Prometheus to be ready",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=5)
        r.raise_for_status()
        body = r.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's ``label_values(match, label)`` lists."""
        r = requests.get(self.url + f"/api/v1/label/{label}/values",
                         params={"match[]": match}, timeout=5)  # fmt: skip
        r.raise_for_status()
        values: list[str] = r.json()["data"]
        return values

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
