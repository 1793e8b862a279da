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
3. **Observation.** A fresh server, ``vllm-profile-exporter record`` attached: Poisson load
   stepping between 20% and 70% of the truth with a plateau at 30% and one at 60% (80 s each),
   then 1.3x the truth for a minute, then 16 clients in a closed loop for 150 s.
4. **Answer.** The recording replayed through the pipeline, as ``serve`` would have computed it
   (tests/capacity_check.py): capacity at the end of each plateau against the truth, how soon
   the overload said ``overloaded`` and the loop ``closed_loop``.

``--fixtures RESULTS`` turns a results file's recordings into the CI's replay fixtures
(tests/fixtures/capacity/: the families the parser reads, the rest of each body dropped, the
same answers checked) and their truths.json. Recordings are written to
``bench/capacity-recordings/``; results, with how long each phase took, to ``--out``.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.derive.capacity import Capacity  # noqa: E402
from exporter.engines.vllm.parse import read_names  # noqa: E402
from tests import capacity_check as check  # noqa: E402
from tests.realvllm import server as vllm_server  # noqa: E402
from tests.realvllm.server import VllmServer, realtime  # noqa: E402

TTFT_OBJECTIVE = check.TTFT_OBJECTIVE
PROBE_SECONDS = 40.0
MAX_NUM_SEQS = check.MAX_NUM_SEQS
PROBES: list[dict[str, Any]] = []  # every truth probe's figures, kept to check the TPOT tail model


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


def bench_command(server: VllmServer, shape: Shape, rate: float | None, prompts: int, out: Path,
                  concurrency: int | None = None, seed: int = 11,
                  start_at: float | None = None) -> list[str]:  # fmt: skip
    """vLLM's benchmark client for one run, its result saved to ``out``; ``start_at``: its
    first request at that wall-clock time (it prepares at once)."""
    client = ROOT / "tests" / "realvllm" / "bench_client.py"
    when = [] if start_at is None else ["--start-at", f"{start_at:.3f}"]
    cmd = [
        str(vllm_server.venv_python()), str(client), *when, "--backend", "openai",
        "--base-url", server.url, "--model", vllm_server.SERVED_NAME,
        "--tokenizer", str(vllm_server.cache_root() / "tiny-llama"),
        "--dataset-name", "random", "--random-input-len", str(shape.input_len),
        "--random-output-len", str(shape.output_len), "--random-range-ratio", "0.0",
        "--random-prefix-len", str(shape.prefix_len),
        "--num-prompts", str(prompts), "--ignore-eos", "--disable-tqdm", "--seed", str(seed),
        "--request-rate", "inf" if rate is None else f"{rate:.4f}",
        "--percentile-metrics", "ttft,tpot,itl", "--metric-percentiles", "99",
        "--save-result", "--result-dir", str(out.parent), "--result-filename", out.name,
    ]  # fmt: skip
    if concurrency is not None:
        cmd += ["--max-concurrency", str(concurrency)]
    return realtime(cmd)


CLIENT_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
              "VLLM_NO_USAGE_STATS": "1"}  # fmt: skip


def bench(server: VllmServer, shape: Shape, rate: float | None, prompts: int, out: Path,
          concurrency: int | None = None) -> dict[str, Any]:  # fmt: skip
    """One run of vLLM's benchmark client; its saved result."""
    cmd = bench_command(server, shape, rate, prompts, out, concurrency)
    with open(out.with_suffix(".log"), "ab") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=CLIENT_ENV, check=True)
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
    kept = ("completed", "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms", "mean_ttft_ms",
            "p99_ttft_ms")  # fmt: skip
    PROBES.append({k: r.get(k) for k in kept} | {"rate": rate, "meets": ok})
    print(f"  {shape.name} {rate:.3f} req/s: TPOT p99 {r['p99_tpot_ms']:.1f} ms, TTFT p99 "
          f"{r['p99_ttft_ms']:.0f} ms, {r['completed']}/{prompts} -> {'meets' if ok else 'misses'}",
          flush=True)  # fmt: skip
    return ok


def truth(server: VllmServer, shape: Shape, objective: float, tmp: Path, start: float) -> float:
    """The highest Poisson rate that meets the objectives, to ~2.5%, doubling from ``start``."""
    low, high = 0.0, start
    while probe(server, shape, high, objective, tmp):
        low, high = high, high * 2
    while high - low > 0.025 * high:
        mid = (low + high) / 2
        if probe(server, shape, mid, objective, tmp):
            low = mid
        else:
            high = mid
    return low


STEPS = (0.2, 0.4, 0.7, 0.3, 0.3, 0.5, 0.7, 0.6, 0.6)  # shares of the truth, PROBE_SECONDS each
LOW_PLATEAU, MAIN_PLATEAU = 4, 8  # the last step of the ~30% and of the ~60% plateau
OVERLOAD, OVERLOAD_SECONDS = 1.3, 60.0
CLOSED_CLIENTS, CLOSED_SECONDS = MAX_NUM_SEQS // 2, 150.0
PREPARE_SECONDS = 60.0  # launched clients load the tokenizer and make their prompts meanwhile


def observe(shape: Shape, rate: float, recording: Path, logs: Path) -> dict[str, Any]:
    """A fresh server, recorded under: Poisson load stepping around ``rate`` (the truth),
    then 1.3x the truth for a minute, then a fixed number of clients in a loop. Returns the
    phases' wall-clock marks (tests/capacity_check.Marks)."""
    server = VllmServer(
        "--max-num-seqs", str(MAX_NUM_SEQS), *shape.flags, log=logs / f"{shape.name}-obs.log"
    )
    server.start()
    rec = subprocess.Popen(
        realtime([sys.executable, "-m", "exporter", "record", "--vllm-url", server.url,
                  "--gpu-source", "none", "--max-num-seqs", str(MAX_NUM_SEQS),
                  "--poll-interval", "250ms", "--calm-poll-interval", "250ms",
                  "-o", str(recording), "--duration", "3600s"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    clients: list[subprocess.Popen[bytes]] = []

    def launch(i: int, r: float | None, prompts: int, start_at: float,
               concurrency: int | None = None) -> None:  # fmt: skip
        out = logs / f"{shape.name}-obs-{i}.json"
        cmd = bench_command(server, shape, r, prompts, out, concurrency, seed=i, start_at=start_at)
        with open(out.with_suffix(".log"), "ab") as log:
            clients.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            env=CLIENT_ENV))  # fmt: skip

    marks: dict[str, Any] = {}
    try:
        # Every open-loop client is launched now and sends from its own step's start: their
        # CPU-heavy starts fall before the load, and one step's arrivals run on into the next
        # without a gap (open-loop load as a server in production sees it). Each its own prompts.
        t0 = time.time() + PREPARE_SECONDS
        for i, share in enumerate(STEPS):
            r = share * rate
            launch(i, r, max(8, round(r * PROBE_SECONDS)), t0 + i * PROBE_SECONDS)
        marks["low_end"] = t0 + (LOW_PLATEAU + 1) * PROBE_SECONDS
        marks["main_end"] = t0 + len(STEPS) * PROBE_SECONDS
        r = OVERLOAD * rate
        launch(len(STEPS), r, round(r * OVERLOAD_SECONDS), marks["main_end"])
        for c in clients:
            c.wait(timeout=1800)  # the overload's backlog drains
        marks["overload"] = (marks["main_end"], time.time())
        start = time.time() + PREPARE_SECONDS
        # Prompts enough for the whole loop, not more: they are made before it starts.
        prompts = round(1.5 * rate * CLOSED_SECONDS)
        launch(len(STEPS) + 1, None, prompts, start, concurrency=CLOSED_CLIENTS)
        time.sleep(PREPARE_SECONDS + CLOSED_SECONDS)
        marks["closed"] = (start, time.time())
    finally:
        for c in clients:
            if c.poll() is None:
                c.terminate()
        rec.terminate()
        rec.wait(timeout=60)
        server.stop()
    return marks


def answer(
    recording: Path, objective: float, truth: float, marks: dict[str, Any]
) -> dict[str, Any]:
    """The exporter's answers at the marks, and the checks of docs/capacity.md's criteria."""
    seen = check.observe(recording, objective, check.Marks(**marks))

    def said(c: Capacity | None) -> dict[str, Any] | None:
        return None if c is None else {
            "withheld": c.withheld, "capacity": c.requests_per_second, "lower": c.lower,
            "upper": c.upper, "limit": c.limit, "bounds": dict(c.bounds), "load": c.load,
            "concurrency": c.concurrency, "model_error": c.model_error, "points": c.points,
            "dispersion": c.dispersion,
        }  # fmt: skip

    return {
        "main": said(seen.main), "low": said(seen.low),
        "main_within_15": check.within(seen.main, truth, 0.15),
        "low_within_25": check.within(seen.low, truth, 0.25),
        "covers": check.covers(seen.main, truth),
        "overloaded_after_s": seen.overloaded_after,
        "headroom_positive_in_overload": seen.headroom_positive_in_overload,
        "closed_after_s": seen.closed_after, "closed_concurrency": seen.closed_concurrency,
    }  # fmt: skip


def run_shape(shape: Shape, repeats: int, tmp: Path, out_dir: Path,
              known: tuple[float, float, str | None] | None = None) -> dict[str, Any]:  # fmt: skip
    """``known``: (truth, TPOT objective, the objective missed above it) of an earlier run, to
    observe again without the truth's search."""
    t0 = time.monotonic()
    PROBES.clear()
    if known is not None:
        truths, objective = [known[0]], known[1]
    else:
        server = VllmServer(
            "--max-num-seqs", str(MAX_NUM_SEQS), *shape.flags, log=tmp / f"{shape.name}.log"
        )
        server.start()
        try:
            alone = bench(server, shape, None, 12, tmp / f"{shape.name}-alone.json", concurrency=1)
            objective = round(3 * alone["p99_tpot_ms"]) / 1e3
            # An eighth of what the cap would allow at the latency alone: a few doublings from
            # the answer, whatever the shape.
            start = MAX_NUM_SEQS / statistics.mean(alone["latencies"]) / 8
            truths = [truth(server, shape, objective, tmp, start) for _ in range(repeats)]
        finally:
            server.stop()
    t1 = time.monotonic()
    recording = out_dir / f"{shape.name}.jsonl.gz"
    best = statistics.median(truths)
    marks = observe(shape, best, recording, tmp)
    t2 = time.monotonic()
    return {
        "shape": shape.name, "tpot_objective_s": objective, "truths": truths, "truth": best,
        "truth_limit": known[2] if known else truth_limit(PROBES, best, objective),
        "marks": marks,
        "answer": answer(recording, objective, best, marks), "probes": list(PROBES),
        "seconds": {"truth": round(t1 - t0), "observation": round(t2 - t1)},
    }  # fmt: skip


def truth_limit(probes: list[dict[str, Any]], truth: float, objective: float) -> str | None:
    """The objective the lowest probe above the truth missed by the most: ``tpot`` or ``ttft``
    (a probe that finished too few requests in time waited: ``ttft``)."""
    above = sorted((p for p in probes if p["rate"] > truth and not p["meets"]),
                   key=lambda p: p["rate"])  # fmt: skip
    if not above:
        return None
    p = above[0]
    tpot, ttft = p["p99_tpot_ms"] / 1e3 / objective, p["p99_ttft_ms"] / 1e3 / TTFT_OBJECTIVE
    return "tpot" if tpot > ttft else "ttft"


FIXTURES = ROOT / "tests" / "fixtures" / "capacity"


def trim(src: Path, dst: Path) -> None:
    """``src`` with each vLLM body cut to the lines the parser reads (and their HELP/TYPE)."""
    names = read_names()
    families = {n.removesuffix(x) for n in names for x in ("_bucket", "_sum", "_count")}
    with gzip.open(src, "rt", encoding="utf-8") as f, gzip.open(dst, "wt", encoding="utf-8") as out:
        for line in f:
            entry = json.loads(line)
            if entry.get("source") == "vllm" and isinstance(entry.get("body"), str):
                kept = [x for x in entry["body"].splitlines()
                        if (x.split(" ")[2] in families if x.startswith("# ") and x.count(" ") > 1
                            else x.split("{")[0].split(" ")[0] in names)]  # fmt: skip
                entry["body"] = "\n".join(kept) + "\n"
            out.write(json.dumps(entry, separators=(",", ":")) + "\n")


def fixtures(results: Path) -> None:
    """The CI's replay fixtures from a results file: each recording trimmed (its answers checked
    to be the same as the whole recording's) and truths.json."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    truths = {}
    for r in json.loads(results.read_text()):
        shape = r["shape"]
        src = ROOT / "bench" / "capacity-recordings" / f"{shape}.jsonl.gz"
        dst = FIXTURES / f"{shape}.jsonl.gz"
        trim(src, dst)
        whole = answer(src, r["tpot_objective_s"], r["truth"], r["marks"])
        cut = answer(dst, r["tpot_objective_s"], r["truth"], r["marks"])
        if whole != cut:
            raise SystemExit(f"{shape}: the trimmed recording answers otherwise: {whole} {cut}")
        missed = [p["rate"] for p in r["probes"] if not p["meets"] and p["rate"] > r["truth"]]
        truths[shape] = {k: r[k] for k in ("truth", "truths", "truth_limit", "tpot_objective_s",
                                           "marks", "seconds")}  # fmt: skip
        if "note" in r:
            truths[shape]["note"] = r["note"]
        # The bisection says the truth lies between the highest rate met and this.
        truths[shape]["truth_missed_at"] = min(missed) if missed else None
        print(f"{dst}: {dst.stat().st_size / 1e3:.0f} kB (from {src.stat().st_size / 1e3:.0f} kB)")
    (FIXTURES / "truths.json").write_text(json.dumps(truths, indent=1, sort_keys=True) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "capacity-results.json")
    ap.add_argument(
        "--truth",
        action="append",
        default=[],
        metavar="SHAPE=RPS@TPOT_MS",
        help="a shape's truth and TPOT objective from an earlier run: observe only",
    )
    ap.add_argument(
        "--fixtures",
        type=Path,
        metavar="RESULTS",
        help="make tests/fixtures/capacity/ from a results file and stop",
    )
    args = ap.parse_args()
    if args.fixtures:
        fixtures(args.fixtures)
        return 0
    known = {}
    for t in args.truth:
        name, _, value = t.partition("=")
        rps, _, rest = value.partition("@")
        ms, _, limit = rest.partition(":")
        known[name] = (float(rps), float(ms) / 1e3, limit or None)
    if not vllm_server.ready():
        print("bench/capacity.py: run scripts/setup-vllm first (the real vLLM and the tiny model)")
        return 2
    out_dir = ROOT / "bench" / "capacity-recordings"
    out_dir.mkdir(exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.shapes.split(","):
            results.append(run_shape(SHAPES[name], args.repeats, Path(tmp), out_dir,
                                     known.get(name)))  # fmt: skip
            print(json.dumps(results[-1], indent=1), flush=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
