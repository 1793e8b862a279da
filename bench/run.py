"""Benchmarks, each against a baseline measured in the same run (not timed tests).

    .venv/bin/python bench/run.py [--seconds 30] [--only parse,cpu,latency,memory]

1. Parse time per real vLLM body: our parser vs prometheus_client's text parser, same bodies.
2. CPU seconds per wall second of the exporter polling a loopback endpoint at 4 Hz with 0, 1
   and 8 replayed GPUs, vs a bare poller that only GETs the same endpoint at the same rate (the
   unavoidable HTTP cost); and with 8 GPUs at the default cadence, the body showing no pressure
   (vLLM polled once a second, the GPUs at 4 Hz).
3. ``/metrics`` latency p50 and p99 with 8 GPUs' series: 1 and 20 connections scraping without
   pause (wrk), and 20 scrapers in step every 250 ms against 1 in step.
4. Resident memory while the pipeline digests 10 simulated hours of polls (real bodies cycled,
   8 GPUs): flat once the horizon is full.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.derive.cadence import pressure  # noqa: E402
from exporter.engines.vllm.parse import parse_vllm_metrics  # noqa: E402
from exporter.engines.vllm.per_poll import parse_vllm_poll  # noqa: E402
from tests.harness import free_port, wait_for  # noqa: E402
from tests.recordings import gpu_recording  # noqa: E402

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
    partly = time_per_call(lambda b: parse_vllm_poll(b, 0.0), items, 5)
    ref = time_per_call(lambda b: list(text_string_to_metric_families(b)), items, 3)
    return {
        "bodies": len(items),
        "mean_body_bytes": statistics.mean(len(b) for b in items),
        "ours_ms": ours * 1e3,
        "prometheus_client_ms": ref * 1e3,
        "speedup": ref / ours,
        # A poll inside a window: the per-poll figures only.
        "per_poll_ms": partly * 1e3,
        "per_poll_speedup": ref / partly,
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


BODY_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
body = open(sys.argv[2], 'rb').read()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and no Nagle delay, as vLLM's uvicorn
    disable_nagle_algorithm = True
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


def exporter_cmd(url: str, port: int, gpu_replay: Path | None, fast: bool = True) -> list[str]:
    """``fast``: vLLM at a fixed 250 ms (the cadence under pressure); else the default flags."""
    gpu = ["--gpu-replay", str(gpu_replay)] if gpu_replay else ["--gpu-source", "none"]
    cadence = ["--calm-poll-interval", "250ms"] if fast else []
    return [sys.executable, "-m", "exporter", "serve", "--vllm-url", url, *gpu, *cadence,
            "--max-num-seqs", "64", "--web.listen-address", f"127.0.0.1:{port}"]  # fmt: skip


def scrape_latency(url: str, scrapers: int, per_scraper: int) -> tuple[float, float, int]:
    """p50 and p99 (ms) of /metrics with ``scrapers`` concurrent clients; and the errors."""
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()

    def client() -> None:
        nonlocal errors
        with requests.Session() as s:
            for _ in range(per_scraper):
                t0 = time.perf_counter()
                try:
                    s.get(url, timeout=5).raise_for_status()
                except requests.RequestException:
                    with lock:
                        errors += 1
                    continue
                with lock:
                    lat.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client) for _ in range(scrapers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat.sort()
    return lat[len(lat) // 2] * 1e3, lat[max(0, int(len(lat) * 0.99) - 1)] * 1e3, errors


def in_step_scrapers(host: str, port: int, scrapers: int, seconds: float,
                     interval: float) -> dict[str, float]:  # fmt: skip
    """``scrapers`` kept-alive connections that all send ``GET /metrics`` at the same instant
    every ``interval`` s — many Prometheus servers on one fast schedule, the worst case for a
    queue. One non-blocking client process, so the figures are the server's, not the client's
    (20 Python client processes on 2 cores mostly measure each other)."""
    request = f"GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    socks = [socket.create_connection((host, port)) for _ in range(scrapers)]
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
    sel = selectors.DefaultSelector()
    lat: list[float] = []
    start = time.monotonic()
    for k in range(int(seconds / interval)):
        time.sleep(max(0.0, start + k * interval - time.monotonic()))
        pending = {}
        t0 = time.perf_counter()
        for s in socks:
            s.sendall(request)
            sel.register(s, selectors.EVENT_READ)
            pending[s] = bytearray()
        while pending:
            for key, _ in sel.select(timeout=5):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                buf = pending[s]
                buf += s.recv(1 << 20)
                head_end = buf.find(b"\r\n\r\n")
                if head_end == -1:
                    continue
                m = re.search(rb"Content-Length: (\d+)", buf[:head_end])
                assert m and buf.startswith(b"HTTP/1.1 200"), bytes(buf[:200])
                if len(buf) >= head_end + 4 + int(m.group(1)):
                    lat.append(time.perf_counter() - t0)
                    sel.unregister(s)
                    del pending[s]
    for s in socks:
        s.close()
    lat.sort()
    return {"p50_ms": lat[len(lat) // 2] * 1e3, "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1e3,
            "scrapes": len(lat)}  # fmt: skip


def wrk(url: str, connections: int) -> dict[str, float]:
    """Closed-loop load from a C client (Debian's wrk): no client-side GIL in the numbers."""
    r = subprocess.run(
        ["wrk", "-t", "2" if connections > 1 else "1", "-c", str(connections), "-d", "10s",
         "--latency", url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", r.stdout, re.M)
        assert m, r.stdout
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
    return {"p50_ms": ms("50"), "p99_ms": ms("99"),
            "requests_per_second": float(rps.group(1)) if rps else 0.0}  # fmt: skip


def calm_body() -> str:
    """A real body that shows no pressure (docs/sources.md): served unchanged, the default cadence
    polls it at the calm interval."""
    for body in bodies():
        if pressure(parse_vllm_metrics(body, 0.0), None, 64.0) is None:
            return body
    raise AssertionError("no calm body in the recordings")


def bench_cpu_and_latency(seconds: float, cpu: bool, latency: bool) -> dict[str, Any]:
    body = calm_body()
    out: dict[str, Any] = {"body_bytes": len(body)}
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp) / "body.txt"
        body_path.write_text(body)
        recordings = {n: Path(tmp) / f"gpus-{n}.jsonl.gz" for n in (1, 8)}
        for n, path in recordings.items():
            gpu_recording(path, n)  # the real H200 readings, an hour long
        port = free_port()
        server = subprocess.Popen([sys.executable, "-c", BODY_SERVER, str(port), str(body_path)])
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            wait_for(lambda: requests.get(url, timeout=1).ok, 10, "body server")
            if cpu:
                out.update(bench_cpu(url, recordings, seconds))
            if latency:
                out.update(bench_latency(url, recordings[8]))
        finally:
            server.terminate()
            server.wait(timeout=10)
    return out


def bench_cpu(url: str, recordings: dict[int, Path], seconds: float,
              rounds: int = 3) -> dict[str, Any]:  # fmt: skip
    """Each configuration ``rounds`` times, interleaved with the bare poller so drifts in the
    machine's speed hit all alike; the median of each, and its spread."""
    runs: dict[str, list[float]] = {}
    for _ in range(rounds):
        runs.setdefault("bare_poller", []).append(
            measure([sys.executable, "-c", BARE_POLLER, url], seconds, 1.0, None)
        )
        for label, rec, fast in (("0_gpus", None, True), ("1_gpu", recordings[1], True),
                                 ("8_gpus", recordings[8], True),
                                 ("8_gpus_calm", recordings[8], False)):  # fmt: skip
            eport = free_port()
            cmd = exporter_cmd(url, eport, rec, fast)
            runs.setdefault(f"exporter_{label}", []).append(
                measure(cmd, seconds, 3.0, f"http://127.0.0.1:{eport}/-/ready")
            )
    out: dict[str, Any] = {"seconds_per_run": seconds, "rounds": rounds}
    bare = statistics.median(runs["bare_poller"])
    for label, values in runs.items():
        med = statistics.median(values)
        out[f"{label}_cpu_s_per_s"] = {"median": med, "min": min(values), "max": max(values)}
        if label != "bare_poller":
            out[f"{label}_ratio_to_bare_poller"] = med / bare if bare > 0 else None
    return out


def bench_latency(url: str, gpus: Path) -> dict[str, Any]:
    """``/metrics`` latency with 8 GPUs' series: one scraper, 20 without pause (wrk, a C client,
    when installed), and 20 in step every 250 ms against one in step (the baseline: what a
    single scrape costs after the machine sat idle for 250 ms)."""
    out: dict[str, Any] = {}
    eport = free_port()
    proc = subprocess.Popen(exporter_cmd(url, eport, gpus),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        murl = f"http://127.0.0.1:{eport}/metrics"
        wait_for(lambda: requests.get(murl, timeout=1).ok, 30, "exporter")
        time.sleep(4)
        p50, p99, errors = scrape_latency(murl, 1, 600)
        out["metrics_latency_1_scraper_requests"] = {"p50_ms": p50, "p99_ms": p99,
                                                     "errors": errors}  # fmt: skip
        if shutil.which("wrk"):
            for connections in (1, 20):
                out[f"metrics_latency_{connections}_connections_wrk"] = wrk(murl, connections)
        else:
            out["wrk"] = "not installed (apt-get install wrk): no closed-loop figures"
        one = in_step_scrapers("127.0.0.1", eport, 1, 20.0, 0.25)
        twenty = in_step_scrapers("127.0.0.1", eport, 20, 20.0, 0.25)
        out["metrics_latency_1_in_step_every_250ms"] = one
        out["metrics_latency_20_in_step_every_250ms"] = twenty
        out["in_step_p99_ratio_20_to_1"] = twenty["p99_ms"] / one["p99_ms"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return out


def bench_memory(hours: float) -> dict[str, Any]:
    """Resident memory of the pipeline fed ``hours`` of simulated polls (real bodies, cycled,
    with 8 GPUs): it must stay flat once the horizon is full."""
    from exporter.app import make_pipeline
    from exporter.config import load_config
    from exporter.samples import GpuReading, GpuSample, Tick

    cfg = load_config({"max_num_seqs": "64"}, {}, {})
    pipeline = make_pipeline(cfg)
    texts = bodies()
    gpus = [GpuReading(index=k, uuid=f"GPU-{k}", name="NVIDIA H200", util_gpu_pct=90.0,
                       power_watts=600.0, mem_used_bytes=9e10, mem_total_bytes=1.5e11)
            for k in range(8)]  # fmt: skip
    rss = []
    ticks = int(hours * 3600 * 4)
    t0 = time.perf_counter()
    for i in range(ticks):
        t = 1.8e9 + i * 0.25
        sample = parse_vllm_metrics(texts[i % len(texts)], t)
        pipeline.add_tick(Tick(engine=sample, gpu=GpuSample(t, tuple(gpus))))
        if i % (3600 * 4) == 0:
            rss.append(resident_mib())
    rss.append(resident_mib())
    return {
        "simulated_hours": hours,
        "ticks": ticks,
        "wall_seconds": time.perf_counter() - t0,
        "rss_mib_each_hour": [round(r, 1) for r in rss],
        "growth_after_first_hour_mib": round(rss[-1] - rss[1], 1) if len(rss) > 1 else None,
    }


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0, help="CPU measurement per run")
    ap.add_argument("--hours", type=float, default=10.0, help="simulated hours for memory")
    ap.add_argument("--only", default="parse,cpu,latency,memory",
                    help="comma-separated subset of parse,cpu,latency,memory")  # fmt: skip
    args = ap.parse_args()
    parts = set(args.only.split(","))
    os.chdir(ROOT)
    report: dict[str, Any] = {}
    if "parse" in parts:
        report["parse"] = bench_parse()
    if parts & {"cpu", "latency"}:
        report["poll_4hz"] = bench_cpu_and_latency(args.seconds, "cpu" in parts,
                                                   "latency" in parts)  # fmt: skip
    if "memory" in parts:
        report["memory"] = bench_memory(args.hours)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
