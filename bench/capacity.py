"""Capacity against the truth, on a real vLLM (docs/capacity.md). Not part of the test run.

    .venv/bin/python bench/capacity.py [--shapes decode-heavy,...] [--repeats 2]
                                       [--restart --truth balanced=RPS@TPOT_MS]
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

``--restart``: the balanced shape's truth at --max-num-seqs 8 searched, then a fresh server at
32 observed at 30% and 60% of its truth, restarted at 8 (the recorder attached all along) and
observed in the same steps around the new truth: ``config_changed`` at once, then the new
answer against the new truth.

``--fixtures RESULTS`` turns a results file's recordings into the CI's replay fixtures
(tests/fixtures/capacity/: the families the parser reads, the rest of each body dropped, the
same answers checked) and their truths.json. Recordings are written to
``bench/capacity-recordings/``; results, with how long each phase took, to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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
from tests.recordings import trimmed  # noqa: E402

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


class Observation:
    """A fresh server with ``vllm-profile-exporter record`` attached, and the load clients
    launched against it; everything stopped on exit."""

    def __init__(self, shape: Shape, recording: Path, logs: Path, max_num_seqs: int) -> None:
        self.shape, self.logs = shape, logs
        self.server = self._server(max_num_seqs)
        self.server.start()
        self.rec = subprocess.Popen(
            realtime([sys.executable, "-m", "exporter", "record", "--vllm-url", self.server.url,
                      "--gpu-source", "none", "--max-num-seqs", str(max_num_seqs),
                      "--poll-interval", "250ms", "--calm-poll-interval", "250ms",
                      "-o", str(recording), "--duration", "3600s"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        self.clients: list[subprocess.Popen[bytes]] = []

    def _server(self, max_num_seqs: int) -> VllmServer:
        log = self.logs / f"{self.shape.name}-obs-{max_num_seqs}.log"
        return VllmServer("--max-num-seqs", str(max_num_seqs), *self.shape.flags, log=log)

    def launch(self, r: float | None, prompts: int, start_at: float,
               concurrency: int | None = None) -> None:  # fmt: skip
        i = len(self.clients)
        out = self.logs / f"{self.shape.name}-obs-{i}.json"
        cmd = bench_command(self.server, self.shape, r, prompts, out, concurrency, seed=i,
                            start_at=start_at)  # fmt: skip
        with open(out.with_suffix(".log"), "ab") as log:
            self.clients.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                 env=CLIENT_ENV))  # fmt: skip

    def steps(self, rate: float, shares: tuple[float, ...]) -> float:
        """Open-loop Poisson clients at ``shares`` of ``rate``, PROBE_SECONDS each, from a
        minute from now; returns when the last step ends. Every client is launched now and
        sends from its own step's start: their CPU-heavy starts fall before the load, and one
        step's arrivals run on into the next without a gap (open-loop load as a server in
        production sees it). Each its own prompts."""
        t0 = time.time() + PREPARE_SECONDS
        for i, share in enumerate(shares):
            r = share * rate
            self.launch(r, max(8, round(r * PROBE_SECONDS)), t0 + i * PROBE_SECONDS)
        return t0 + len(shares) * PROBE_SECONDS

    def drain(self) -> None:
        for c in self.clients:
            c.wait(timeout=1800)

    def restart(self, max_num_seqs: int) -> float:
        """The server stopped and started again (same port) with another --max-num-seqs, the
        recorder attached all along; returns when it stopped."""
        port = self.server.port
        stopped = time.time()
        self.server.stop()
        self.server = self._server(max_num_seqs)
        self.server.port = port
        self.server.start()
        return stopped

    def __enter__(self) -> Observation:
        return self

    def __exit__(self, *_: object) -> None:
        for c in self.clients:
            if c.poll() is None:
                c.terminate()
        self.rec.terminate()
        self.rec.wait(timeout=60)
        self.server.stop()


def observe(shape: Shape, rate: float, recording: Path, logs: Path) -> dict[str, Any]:
    """A fresh server, recorded under: Poisson load stepping around ``rate`` (the truth),
    then 1.3x the truth for a minute, then a fixed number of clients in a loop. Returns the
    phases' wall-clock marks (tests/capacity_check.Marks)."""
    marks: dict[str, Any] = {}
    with Observation(shape, recording, logs, MAX_NUM_SEQS) as o:
        marks["main_end"] = o.steps(rate, STEPS)
        marks["low_end"] = marks["main_end"] - (len(STEPS) - LOW_PLATEAU - 1) * PROBE_SECONDS
        r = OVERLOAD * rate
        o.launch(r, round(r * OVERLOAD_SECONDS), marks["main_end"])
        o.drain()  # the overload's backlog drains
        marks["overload"] = (marks["main_end"], time.time())
        start = time.time() + PREPARE_SECONDS
        # Prompts enough for the whole loop, not more: they are made before it starts.
        prompts = round(1.5 * rate * CLOSED_SECONDS)
        o.launch(None, prompts, start, concurrency=CLOSED_CLIENTS)
        time.sleep(PREPARE_SECONDS + CLOSED_SECONDS)
        marks["closed"] = (start, time.time())
    return marks


RESTART_MAX_NUM_SEQS = 8
BEFORE_RESTART = (0.3, 0.6, 0.6)  # shares of the first truth, before the restart


def observe_restart(
    shape: Shape, first: float, second: float, recording: Path, logs: Path
) -> dict[str, Any]:
    """A server at --max-num-seqs MAX_NUM_SEQS under load around ``first`` (its truth), then
    restarted at RESTART_MAX_NUM_SEQS and loaded in STEPS around ``second`` (the truth
    there). Marks: the restart (when the first server stopped, and the new cap) and the end
    of the ~60% plateau after it."""
    with Observation(shape, recording, logs, MAX_NUM_SEQS) as o:
        o.steps(first, BEFORE_RESTART)
        o.drain()
        restart = o.restart(RESTART_MAX_NUM_SEQS)
        main_end = o.steps(second, STEPS)
        o.drain()
    return {"restart": (restart, RESTART_MAX_NUM_SEQS), "main_end": main_end,
            "low_end": None, "overload": None, "closed": None}  # fmt: skip


def answer(
    recording: Path, objective: float, truth: float, marks: dict[str, Any]
) -> dict[str, Any]:
    """The exporter's answers at the marks, and the checks of docs/capacity.md's criteria."""
    seen = check.observe(recording, objective, check.marks(marks))

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
        "config_changed_after_s": seen.config_changed_after,
    }  # fmt: skip


def search(shape: Shape, repeats: int, tmp: Path, max_num_seqs: int,
           objective: float | None = None) -> tuple[list[float], float]:  # fmt: skip
    """The truth ``repeats`` times on one fresh server, and the TPOT objective (3x TPOT p99
    alone, unless given)."""
    server = VllmServer("--max-num-seqs", str(max_num_seqs), *shape.flags,
                        log=tmp / f"{shape.name}-{max_num_seqs}.log")  # fmt: skip
    server.start()
    try:
        alone = bench(server, shape, None, 12, tmp / f"{shape.name}-alone.json", concurrency=1)
        if objective is None:
            objective = round(3 * alone["p99_tpot_ms"]) / 1e3
        # An eighth of what the cap would allow at the latency alone: a few doublings from the
        # answer, whatever the shape.
        start = max_num_seqs / statistics.mean(alone["latencies"]) / 8
        return [truth(server, shape, objective, tmp, start) for _ in range(repeats)], objective
    finally:
        server.stop()


def run_shape(shape: Shape, repeats: int, tmp: Path, out_dir: Path,
              known: tuple[float, float, str | None] | None = None) -> dict[str, Any]:  # fmt: skip
    """``known``: (truth, TPOT objective, the objective missed above it) of an earlier run, to
    observe again without the truth's search."""
    t0 = time.monotonic()
    PROBES.clear()
    if known is not None:
        truths, objective = [known[0]], known[1]
    else:
        truths, objective = search(shape, repeats, tmp, MAX_NUM_SEQS)
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


RESTART = "restart"  # the restart's result and recording: shape "restart"


def run_restart(shape: Shape, repeats: int, tmp: Path, out_dir: Path,
                known: tuple[float, float, str | None]) -> dict[str, Any]:  # fmt: skip
    """The restart into another --max-num-seqs: the truth there searched, then observed from
    the first cap's load (``known``: its truth and objective) through the restart."""
    t0 = time.monotonic()
    PROBES.clear()
    first, objective = known[0], known[1]
    truths, _ = search(shape, repeats, tmp, RESTART_MAX_NUM_SEQS, objective)
    t1 = time.monotonic()
    best = statistics.median(truths)
    recording = out_dir / f"{RESTART}.jsonl.gz"
    marks = observe_restart(shape, first, best, recording, tmp)
    t2 = time.monotonic()
    return {
        "shape": RESTART, "workload": shape.name, "tpot_objective_s": objective,
        "truth_before": first, "truths": truths, "truth": best,
        "truth_limit": truth_limit(PROBES, best, objective), "marks": marks,
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
    trimmed(src, dst, "vllm", names | families)


def fixtures(results: Path) -> None:
    """The CI's replay fixtures from a results file: each recording trimmed (its answers checked
    to be the same as the whole recording's) and its entry in truths.json (the shapes) or
    restart.json (the restart) replaced; other shapes' entries are kept."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    index = FIXTURES / "truths.json"
    truths = json.loads(index.read_text()) if index.exists() else {}
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
        kept = ("truth", "truths", "truth_limit", "tpot_objective_s", "marks", "seconds", "note",
                "truth_before", "workload")  # fmt: skip
        entry = {k: r[k] for k in kept if k in r}
        # The bisection says the truth lies between the highest rate met and this.
        entry["truth_missed_at"] = min(missed) if missed else None
        if shape == RESTART:
            (FIXTURES / "restart.json").write_text(json.dumps(entry, indent=1, sort_keys=True)
                                                   + "\n")  # fmt: skip
        else:
            truths[shape] = entry
        print(f"{dst}: {dst.stat().st_size / 1e3:.0f} kB (from {src.stat().st_size / 1e3:.0f} kB)")
        print(json.dumps({"shape": shape, "truth": r["truth"], "answer": cut}), flush=True)
    index.write_text(json.dumps(truths, indent=1, sort_keys=True) + "\n")


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
        "--restart",
        action="store_true",
        help=f"also the restart into --max-num-seqs {RESTART_MAX_NUM_SEQS} (balanced; needs its "
        "--truth)",
    )
    ap.add_argument(
        "--fixtures",
        type=Path,
        metavar="RESULTS",
        help="make tests/fixtures/capacity/ from a results file and stop",
    )
    args = ap.parse_args()
    # A SIGTERM or SIGHUP unwinds like Ctrl-C: every ``finally`` stops its vLLM (a server runs in
    # its own session with engine children, which a plain kill of this driver would orphan).
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(128 + 15))
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
        for name in filter(None, args.shapes.split(",")):
            results.append(run_shape(SHAPES[name], args.repeats, Path(tmp), out_dir,
                                     known.get(name)))  # fmt: skip
            print(json.dumps(results[-1], indent=1), flush=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
        if args.restart:
            results.append(run_restart(SHAPES["balanced"], args.repeats, Path(tmp), out_dir,
                                       known["balanced"]))  # fmt: skip
            print(json.dumps(results[-1], indent=1), flush=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
