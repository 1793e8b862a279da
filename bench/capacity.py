"""Capacity against the truth, on a real vLLM (docs/capacity.md). Not part of the test run.

    .venv/bin/python bench/capacity.py [--shapes decode-heavy,...] [--repeats 2]
                                       [--out bench/capacity-results.json]

For each workload shape, on the real vLLM (the CPU build and the tiny model of
``scripts/setup-vllm``):

1. **Objective.** vLLM's own benchmark client (``vllm.benchmarks.serve``) at one request at a
   time gives the shape's TPOT p99 alone; the objective is 3x that (TTFT p99 at most 2 s).
2. **Truth.** Poisson arrivals at a rate doubled until a probe misses an objective (or finishes
   fewer than 90% of the requests it was offered in time), then bisected to ~2.5%. Each probe
   runs long enough for ~40 s of arrivals. Repeated ``--repeats`` times: their spread is reported.
3. **Observation.** A fresh server, ``vllm-profile-exporter record`` attached, and Poisson load
   stepping between 20% and 70% of the truth, ending at 60% (the horizon's load).
4. **Answer.** The recording replayed through the pipeline, as ``serve`` would have computed it:
   capacity, its interval and limit (or why it is withheld), against the truth.

The recordings are written to ``bench/capacity-recordings/`` (copy one into tests/fixtures/ to
check its answer in CI). Results, with how long each phase took, go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.app import make_pipeline  # noqa: E402
from exporter.config import load_config  # noqa: E402
from exporter.scrape.replay import replay_ticks  # noqa: E402
from tests.realvllm import server as vllm_server  # noqa: E402
from tests.realvllm.server import VllmServer, realtime  # noqa: E402

TTFT_OBJECTIVE = 2.0  # seconds, p99
PROBE_SECONDS = 40.0
MAX_NUM_SEQS = 32


@dataclass(frozen=True)
class Shape:
    name: str
    input_len: int
    output_len: int
    flags: tuple[str, ...] = ()
    prefix_len: int = 0


SHAPES = {
    s.name: s
    for s in (
        Shape("decode-heavy", 24, 192),
        Shape("prefill-heavy", 480, 16),
        Shape("balanced", 128, 96),
        # A KV pool of 96 blocks: a few long requests fill it.
        Shape("kv-bound", 256, 384, flags=("--num-gpu-blocks-override", "96")),
        Shape("prefix-heavy", 64, 64, prefix_len=400),
    )
}


def bench(server: VllmServer, shape: Shape, rate: float | None, prompts: int, out: Path,
          concurrency: int | None = None) -> dict[str, Any]:  # fmt: skip
    """One run of vLLM's benchmark client; its saved result."""
    client = ROOT / "tests" / "realvllm" / "bench_client.py"
    cmd = [
        str(vllm_server.venv_python()), str(client), "--backend", "openai",
        "--base-url", server.url, "--model", vllm_server.SERVED_NAME,
        "--tokenizer", str(vllm_server.cache_root() / "tiny-llama"),
        "--dataset-name", "random", "--random-input-len", str(shape.input_len),
        "--random-output-len", str(shape.output_len), "--random-range-ratio", "0.0",
        "--random-prefix-len", str(shape.prefix_len),
        "--num-prompts", str(prompts), "--ignore-eos", "--disable-tqdm", "--seed", "11",
        "--request-rate", "inf" if rate is None else f"{rate:.4f}",
        "--percentile-metrics", "ttft,tpot,itl", "--metric-percentiles", "99",
        "--save-result", "--result-dir", str(out.parent), "--result-filename", out.name,
    ]  # fmt: skip
    if concurrency is not None:
        cmd += ["--max-concurrency", str(concurrency)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1"}  # fmt: skip
    with open(out.with_suffix(".log"), "ab") as log:
        subprocess.run(realtime(cmd), stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    return dict(json.loads(out.read_text()))


def meets(r: dict[str, Any], tpot_objective: float, offered: int) -> bool:
    return (
        r["completed"] >= 0.9 * offered
        and r["p99_tpot_ms"] / 1e3 <= tpot_objective
        and r["p99_ttft_ms"] / 1e3 <= TTFT_OBJECTIVE
    )


def probe(server: VllmServer, shape: Shape, rate: float, objective: float, tmp: Path) -> bool:
    prompts = max(40, round(rate * PROBE_SECONDS))
    r = bench(server, shape, rate, prompts, tmp / f"probe-{rate:.4f}-{time.time():.0f}.json")
    ok = meets(r, objective, prompts)
    print(f"  {shape.name} {rate:.3f} req/s: TPOT p99 {r['p99_tpot_ms']:.1f} ms, TTFT p99 "
          f"{r['p99_ttft_ms']:.0f} ms, {r['completed']}/{prompts} -> {'meets' if ok else 'misses'}",
          flush=True)  # fmt: skip
    return ok


def truth(server: VllmServer, shape: Shape, objective: float, tmp: Path) -> float:
    """The highest Poisson rate that meets the objectives, to ~2.5%."""
    low, high = 0.0, 0.5
    while probe(server, shape, high, objective, tmp):
        low, high = high, high * 2
    while high - low > 0.025 * high:
        mid = (low + high) / 2
        if probe(server, shape, mid, objective, tmp):
            low = mid
        else:
            high = mid
    return low


def observe(shape: Shape, rate: float, recording: Path, logs: Path) -> None:
    """A fresh server under Poisson load stepping around ``rate`` (the truth), recorded."""
    server = VllmServer(
        "--max-num-seqs", str(MAX_NUM_SEQS), *shape.flags, log=logs / f"{shape.name}-obs.log"
    )
    server.start()
    steps = (0.2, 0.4, 0.7, 0.3, 0.5, 0.7, 0.6, 0.6)
    seconds = PROBE_SECONDS * len(steps) + 30
    rec = subprocess.Popen(
        realtime([sys.executable, "-m", "exporter", "record", "--vllm-url", server.url,
                  "--gpu-source", "none", "--max-num-seqs", str(MAX_NUM_SEQS),
                  "--poll-interval", "250ms", "--calm-poll-interval", "250ms",
                  "-o", str(recording), "--duration", f"{seconds:.0f}s"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    try:
        for i, share in enumerate(steps):
            r = share * rate
            bench(server, shape, r, max(8, round(r * PROBE_SECONDS)),
                  logs / f"{shape.name}-obs-{i}.json")  # fmt: skip
        rec.wait(timeout=seconds + 120)
    finally:
        if rec.poll() is None:
            rec.terminate()
        server.stop()


def answer(recording: Path, objective: float) -> dict[str, Any]:
    cfg = load_config({"max_num_seqs": str(MAX_NUM_SEQS), "slo_tpot": f"{objective * 1e3:.1f}ms",
                       "horizon": "60s"}, {}, {})  # fmt: skip
    pipeline = make_pipeline(cfg)
    for tick in replay_ticks(recording, None):
        pipeline.add_tick(tick)
    c = pipeline.snapshot.capacity
    return {
        "withheld": c.withheld, "capacity": c.requests_per_second, "lower": c.lower,
        "upper": c.upper, "limit": c.limit, "bounds": dict(c.bounds), "load": c.load,
        "concurrency": c.concurrency, "model_error": c.model_error, "points": c.points,
    }  # fmt: skip


def run_shape(shape: Shape, repeats: int, tmp: Path, out_dir: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    server = VllmServer(
        "--max-num-seqs", str(MAX_NUM_SEQS), *shape.flags, log=tmp / f"{shape.name}.log"
    )
    server.start()
    try:
        alone = bench(server, shape, None, 12, tmp / f"{shape.name}-alone.json", concurrency=1)
        objective = round(3 * alone["p99_tpot_ms"]) / 1e3
        truths = [truth(server, shape, objective, tmp) for _ in range(repeats)]
    finally:
        server.stop()
    t1 = time.monotonic()
    recording = out_dir / f"{shape.name}.jsonl.gz"
    observe(shape, statistics.median(truths), recording, tmp)
    t2 = time.monotonic()
    got = answer(recording, objective)
    best = statistics.median(truths)
    cap = got["capacity"]
    return {
        "shape": shape.name, "tpot_objective_s": objective, "truths": truths,
        "truth": best, "answer": got,
        "error": None if cap is None else cap / best - 1,
        "interval_covers": None if got["lower"] is None else got["lower"] <= best <= got["upper"],
        "seconds": {"truth": round(t1 - t0), "observation": round(t2 - t1)},
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "capacity-results.json")
    args = ap.parse_args()
    if not vllm_server.ready():
        print("bench/capacity.py: run scripts/setup-vllm first (the real vLLM and the tiny model)")
        return 2
    out_dir = ROOT / "bench" / "capacity-recordings"
    out_dir.mkdir(exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.shapes.split(","):
            results.append(run_shape(SHAPES[name], args.repeats, Path(tmp), out_dir))
            print(json.dumps(results[-1], indent=1), flush=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
