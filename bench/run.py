"""Benchmarks, each against a baseline measured in the same run (not timed tests).

    .venv/bin/python bench/run.py [--seconds 20]

1. Parse time per real vLLM body: our parser vs prometheus_client's text parser, same bodies.
2. CPU seconds per wall second of the exporter polling a loopback endpoint at 4 Hz, vs a bare
   poller that only GETs the same endpoint at the same rate (the unavoidable HTTP cost).
3. ``/metrics`` latency of the running exporter, p50 and p99 over sequential scrapes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.scrape.vllm_parse import parse_vllm_metrics  # noqa: E402
from tests.harness import free_port, wait_for  # noqa: E402

RECORDINGS = [
    ROOT / "tests/fixtures/vllm/vllm032-cpu-b-underbatch.jsonl.gz",
    ROOT / "tests/fixtures/vllm/vllm032-cpu-c-saturation.jsonl.gz",
]
TICKS = os.sysconf("SC_CLK_TCK")


def bodies() -> list[str]:
    out = []
    for path in RECORDINGS:
        with gzip.open(path, "rt") as f:
            out += [e["body"] for e in map(json.loads, f) if "body" in e and e["source"] == "vllm"]
    return out


def time_per_call(fn, items: list[str], repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Median over items of the best-of-``repeat`` time of ``fn(item)``, in seconds."""
    per_item = []
    for item in items:
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(item)
            best = min(best, time.perf_counter() - t0)
        per_item.append(best)
    return statistics.median(per_item)


def bench_parse() -> dict[str, float]:
    items = bodies()
    ours = time_per_call(lambda b: parse_vllm_metrics(b, 0.0), items, 5)
    ref = time_per_call(lambda b: list(text_string_to_metric_families(b)), items, 3)
    return {
        "bodies": len(items),
        "mean_body_bytes": statistics.mean(len(b) for b in items),
        "ours_ms": ours * 1e3,
        "prometheus_client_ms": ref * 1e3,
        "speedup": ref / ours,
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


BODY_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
body = open(sys.argv[2], 'rb').read()
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-Type', 'text/plain; version=0.0.4')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
"""

BARE_POLLER = """
import sys, time, requests
s = requests.Session()
url, interval = sys.argv[1], 0.25
start = time.monotonic(); k = 0
while True:
    s.get(url, timeout=1).content
    k += 1
    time.sleep(max(0.0, start + k * interval - time.monotonic()))
"""


def measure(cmd: list[str], seconds: float, warmup: float, ready_url: str | None) -> float:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if ready_url:
            wait_for(lambda: requests.get(ready_url, timeout=1).ok, 30, ready_url)
        time.sleep(warmup)
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        return (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bench_cpu_and_latency(seconds: float) -> dict[str, float]:
    body = bodies()[-1]
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp) / "body.txt"
        body_path.write_text(body)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-c", BODY_SERVER, str(port), str(body_path)])
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            wait_for(lambda: requests.get(url, timeout=1).ok, 10, "body server")
            bare = measure([sys.executable, "-c", BARE_POLLER, url], seconds, 1.0, None)
            eport = free_port()
            exporter_cmd = [
                sys.executable,
                "-m",
                "exporter",
                "serve",
                "--vllm-url",
                url,
                "--gpu-source",
                "none",
                "--web.listen-address",
                f"127.0.0.1:{eport}",
            ]
            ours = measure(exporter_cmd, seconds, 3.0, f"http://127.0.0.1:{eport}/-/ready")
            # /metrics latency on a fresh exporter instance.
            proc = subprocess.Popen(
                exporter_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                murl = f"http://127.0.0.1:{eport}/metrics"
                wait_for(lambda: requests.get(murl, timeout=1).ok, 30, "exporter")
                time.sleep(3)
                s = requests.Session()
                lat = []
                for _ in range(300):
                    t0 = time.perf_counter()
                    s.get(murl, timeout=5).raise_for_status()
                    lat.append(time.perf_counter() - t0)
                lat.sort()
            finally:
                proc.terminate()
                proc.wait(timeout=10)
        finally:
            server.terminate()
            server.wait(timeout=10)
    return {
        "body_bytes": len(body),
        "exporter_cpu_s_per_s": ours,
        "bare_poller_cpu_s_per_s": bare,
        "ratio_exporter_to_bare_poller": ours / bare if bare > 0 else float("nan"),
        "metrics_latency_p50_ms": lat[len(lat) // 2] * 1e3,
        "metrics_latency_p99_ms": lat[int(len(lat) * 0.99) - 1] * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    os.chdir(ROOT)
    report = {"parse": bench_parse(), "poll_4hz": bench_cpu_and_latency(args.seconds)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
