"""Rules on real recordings, the diagnose report (golden text, JSON) and `diagnose --loop`."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import RecordedVllm
from tests.helpers import cli_in_process
from tests.paths import H200, VLLM

GOLDEN = Path(__file__).parent / "golden"


def cli(*args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return r.stdout


def figure(d: dict, name: str, **labels: str) -> float | None:
    """The value of the one series ``name`` (with those labels) in a --json report's metrics."""
    found = [x["value"] for x in d["metrics"].get(name, [])
             if all(x["labels"].get(k) == v for k, v in labels.items())]  # fmt: skip
    assert len(found) <= 1, (name, found)
    return found[0] if found else None


def labels_of(d: dict, name: str) -> dict[str, str]:
    (series,) = d["metrics"][name]
    return dict(series["labels"])


def diagnosis_json(recording: str, *args: str) -> dict:
    return json.loads(cli("replay", str(VLLM / recording), "--diagnose", "--json", *args))


def significant(d: dict) -> set[tuple[str, str]]:
    return {(r["rule"], r["variant"]) for r in d["rules"] if r["significant"]}


@pytest.mark.parametrize(
    ("recording", "cap", "expected", "primary"),
    [
        # One client on --max-num-seqs 64: under-batching.
        ("vllm032-cpu-b-underbatch.jsonl.gz", "64", {("R1", "")}, ("scheduling", "R1")),
        # 16 clients on --max-num-seqs 4: saturation (and, with unique prompts, low reuse).
        ("vllm032-cpu-c-saturation.jsonl.gz", "4", {("R5", ""), ("R3", "")}, ("scheduling", "R5")),
        # 12 KV blocks, long outputs: KV pressure with preemptions (backlog suppressed).
        ("vllm032-cpu-d-kvpressure.jsonl.gz", "8", {("R2", "main")}, ("memory", "R2")),
        # Unique prompts at 25 req/s with prefix caching on: low reuse.
        ("vllm032-cpu-e2-prefix-unique.jsonl.gz", "8", {("R3", "")}, ("cache_reuse", "R3")),
        # Shared prefixes: 77% hit rate, nothing to fix.
        ("vllm032-cpu-e1-prefix-shared.jsonl.gz", "8", set(), None),
    ],
)
def test_real_recordings_fire_the_right_rules(
    recording: str, cap: str, expected: set, primary: tuple[str, str] | None
) -> None:
    d = diagnosis_json(recording, "--max-num-seqs", cap, "--gpu-source", "none")
    assert significant(d) == expected
    groups = [(i["group"], i["primary"]["rule"]) for i in d["issues"]]
    assert (groups[0] if groups else None) == primary


def test_prefix_caching_disabled_gets_the_enable_fix() -> None:
    d = diagnosis_json("vllm032-cpu-e3-prefix-disabled.jsonl.gz", "--max-num-seqs", "8")
    (issue,) = d["issues"]
    assert issue["primary"]["rule"] == "R3"
    assert issue["primary"]["fix"].startswith("Enable --enable-prefix-caching")


def recorded(name: str, family: str) -> list[tuple[float, float, float]]:
    """(time, process start time, the family's sum) for each answered poll, read with
    prometheus_client's reference parser, independently of the exporter's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    def value(body: str, metric: str) -> float:
        return sum(s.value for f in text_string_to_metric_families(body) for s in f.samples
                   if s.name == metric)  # fmt: skip

    with gzip.open(VLLM / name, "rt") as f:
        polls = [e for e in map(json.loads, f) if e.get("source") == "vllm" and "body" in e]
    return [(p["t"], value(p["body"], "process_start_time_seconds"), value(p["body"], family))
            for p in polls]  # fmt: skip


def test_restart_starts_a_new_epoch_and_a_direction() -> None:
    # The recording: 61 polls of one vLLM process (15 s), a 110 s outage, 81 polls of the
    # restarted one (20 s). With an 8 s horizon (4 windows of 8 polls, from the first poll):
    # * before: the last full horizon of the first process is windows [32-40], [40-48],
    #   [48-56] and [56-60] (the last poll before the outage closes it): throughput over polls
    #   32 → 60, all active;
    # * after: the first full horizon of the new process, its polls 0 → 32 (a restart opens a
    #   new window at its first poll).
    rows = recorded("vllm032-cpu-f-restart.jsonl.gz", "vllm:generation_tokens_total")
    first = [r for r in rows if r[1] == rows[0][1]]
    second = [r for r in rows if r[1] != rows[0][1]]
    assert (len(first), len(second)) == (61, 81)

    def rate(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
        return (b[2] - a[2]) / (b[0] - a[0])

    before, after = rate(first[32], first[60]), rate(second[0], second[32])
    change = 100 * (after - before) / before  # ≈ 676 → 798 tok/s: +18%
    # A fixed 250 ms cadence (the calm interval equal to the fast one): every recorded poll is
    # used, as in the hand computation above.
    d = diagnosis_json("vllm032-cpu-f-restart.jsonl.gz", "--max-num-seqs", "8", "--horizon", "8s",
                       "--calm-poll-interval", "250ms")  # fmt: skip
    assert figure(d, "vllm_profile_config_epoch") == 1
    x = d["direction"]
    # No catalog match for the tiny model: throughput is the signal.
    assert x["signal"] == "throughput" and figure(d, "vllm_profile_efficiency_delta_ratio") is None
    assert x["before"]["generation_tps"] == pytest.approx(before, rel=1e-6)
    assert x["after"]["generation_tps"] == pytest.approx(after, rel=1e-6)
    delta = figure(d, "vllm_profile_throughput_delta_ratio")
    assert delta == pytest.approx(change / 100, rel=1e-6)
    assert change > 10 and x["direction"] == "better"  # docs/rules.md: > +10% is better
    assert figure(d, "vllm_profile_direction", direction="better") == 1.0


def test_no_rule_needs_what_it_cannot_have() -> None:
    # Without --max-num-seqs: R1, R5 and the backlog path are skipped and say why.
    d = diagnosis_json("vllm032-cpu-b-underbatch.jsonl.gz", "--gpu-source", "none")
    skipped = {(r["rule"], r["variant"]): r["latest"]["skipped"] for r in d["rules"]}
    assert skipped[("R1", "")] == skipped[("R5", "")] == "max_num_seqs_unknown"
    why = {(r["rule"], r["variant"]): r["latest"]["why"] for r in d["rules"]}
    assert why[("R1", "")] == why[("R5", "")] == "max_num_seqs unknown: pass --max-num-seqs"
    assert significant(d) == set()


GOLDEN_CASES = {
    # The model unknown to the catalog: no roofline, and why.
    "diagnose-saturation-h200.txt": ("-v",),
    # The same server with the tiny model's parameter count given and a price: every ceiling,
    # floor, weight and headroom figure, energy and both cost bases (text and JSON).
    "diagnose-saturation-h200-roofline.txt": ("--model-params", "425600", "--cost-per-hour", "3.5"),
    "diagnose-saturation-h200-roofline.json": ("--model-params", "425600", "--cost-per-hour", "3.5",
                                               "--json"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(GOLDEN_CASES))
def test_report_matches_golden(name: str, update_golden: bool) -> None:
    text = cli(
        "replay", str(VLLM / "vllm032-cpu-c-saturation.jsonl.gz"), "--diagnose",
        "--max-num-seqs", "4", "--gpu-replay", str(H200), *GOLDEN_CASES[name],
    )  # fmt: skip
    golden = GOLDEN / name
    if update_golden:
        golden.write_text(text)
    assert text == golden.read_text()


def test_whole_recording_diagnosis_compares_the_epochs_around_a_restart() -> None:
    # Without --horizon, replay --diagnose covers the latest epoch whole and compares it with
    # the whole epoch before: the restart recording's second process against its first.
    rows = recorded("vllm032-cpu-f-restart.jsonl.gz", "vllm:generation_tokens_total")
    cut = next(i for i in range(1, len(rows)) if rows[i][2] < rows[i - 1][2])  # counter fell
    d = json.loads(cli_in_process("replay", str(VLLM / "vllm032-cpu-f-restart.jsonl.gz"),
                                  "--diagnose", "--json", "--max-num-seqs", "8"))  # fmt: skip
    # The recording's vLLM restarted with the same flags: a restart, not a configuration change.
    assert figure(d, "vllm_profile_config_epoch_info", cause="engine_restart_same_config") == 1
    assert figure(d, "vllm_profile_config_epoch") == 1
    # The span is the new process's only: nothing from before the restart is mixed in.
    start = figure(d, "vllm_profile_horizon_start_timestamp_seconds")
    assert start is not None and start >= rows[cut][0]
    x = d["direction"]
    assert x is not None and x["signal"] == "throughput"
    before, after = x["before"]["generation_tps"], x["after"]["generation_tps"]
    delta = figure(d, "vllm_profile_throughput_delta_ratio")
    assert delta == pytest.approx((after - before) / before, rel=1e-9)
    # docs/rules.md: beyond ±10% is better or worse
    verdict = "better" if delta > 0.1 else "worse" if delta < -0.1 else "plateau"
    assert x["direction"] == verdict
    tps = figure(d, "vllm_profile_generation_tokens_per_second")
    assert after == pytest.approx(tps, rel=1e-9)


def test_json_carries_the_report() -> None:
    d = diagnosis_json(
        "vllm032-cpu-c-saturation.jsonl.gz", "--max-num-seqs", "4", "--gpu-replay", str(H200)
    )
    text = cli(
        "replay", str(VLLM / "vllm032-cpu-c-saturation.jsonl.gz"), "--diagnose",
        "--max-num-seqs", "4", "--gpu-replay", str(H200),
    )  # fmt: skip
    # The same figures in both forms.
    assert labels_of(d, "vllm_profile_info")["gpu_catalog"] == "H200" and "(catalog: H200)" in text
    tps = figure(d, "vllm_profile_generation_tokens_per_second")
    assert f"{tps:.1f} tok/s generated" in text
    assert f"seen in {d['issues'][0]['primary']['score']:.0%} of windows" in text
    windows = [figure(d, f"vllm_profile_{k}windows") for k in ("", "evaluable_", "active_")]
    assert windows == [14, 14, 12]


def test_json_metrics_are_the_series_of_metrics() -> None:
    """--json's metrics are what /metrics serves for the same replay, series for series (the
    same horizon: without one, a diagnosis covers the whole recording)."""
    args = (
        "replay",
        str(VLLM / "vllm032-cpu-c-saturation.jsonl.gz"),
        "--max-num-seqs",
        "4",
        "--gpu-replay",
        str(H200),
        "--model-params",
        "425600",
        "--cost-per-hour",
        "3.5",
        "--horizon",
        "60s",
    )
    d = json.loads(cli(*args, "--diagnose", "--json"))
    served = {}
    for family in text_string_to_metric_families(cli(*args, "--print-metrics")):
        for x in family.samples:
            served.setdefault(x.name, []).append({"labels": dict(x.labels), "value": x.value})
    assert d["metrics"] == served
    assert "vllm_profile_decode_stream_ceiling_tokens_per_second" in d["metrics"]


class Console:
    """Reads a child's stdout in the background so prompts without newlines can be awaited."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc, self.out = proc, b""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := os.read(self.proc.stdout.fileno(), 4096):
            self.out += chunk

    def expect(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.out:
            if time.monotonic() > deadline:
                raise AssertionError(f"never saw {text!r}; got:\n{self.out.decode()}")
            time.sleep(0.05)
        self.out = self.out.split(text.encode(), 1)[1]

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()


@pytest.mark.e2e
def test_diagnose_loop_asks_after_a_worse_run() -> None:
    vllm = RecordedVllm(VLLM / "vllm032-cpu-c-saturation.jsonl.gz")
    vllm.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "diagnose", "--url", vllm.url, "--duration", "5s",
         "--gpu-source", "none", "--max-num-seqs", "4", "--loop"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    console = Console(proc)
    try:
        console.expect("== run 1")
        console.expect("press Enter to re-measure")
        # The "change": the server now serves one client (~480 instead of ~1,750 tok/s).
        vllm.switch(VLLM / "vllm032-cpu-b-underbatch.jsonl.gz")
        console.send("")
        console.expect("== run 2")
        console.expect("Direction  WORSE")
        console.expect("[r] revert or [c] continue?")
        console.send("c")
        console.expect("this state is the new baseline")
        console.expect("press Enter to re-measure")
        # Same state again: measured against the new baseline, it is not worse.
        console.send("")
        console.expect("== run 3")
        console.expect("Direction  ")
        console.expect("press Enter to re-measure")
        console.send("q")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        vllm.stop()


def test_no_evaluable_window_shows_the_last_raw_window(tmp_path: Path) -> None:
    # vLLM answers but never says how many requests run: no window is evaluable (docs/design.md),
    # so the report shows the last window as it is (docs/design.md) instead of n/a everywhere.
    src = VLLM / "vllm032-cpu-b-underbatch.jsonl.gz"
    out = tmp_path / "no-running.jsonl.gz"
    with gzip.open(src, "rt") as f, gzip.open(out, "wt") as g:
        for line in f:
            e = json.loads(line)
            if "body" in e:
                e["body"] = "".join(x for x in e["body"].splitlines(keepends=True)
                                    if not x.startswith("vllm:num_requests_running"))  # fmt: skip
            g.write(json.dumps(e) + "\n")
    fixed = ("--gpu-source", "none", "--calm-poll-interval", "250ms")  # every recorded poll
    d = json.loads(cli("replay", str(out), "--diagnose", "--json", *fixed))
    assert figure(d, "vllm_profile_evaluable_windows") == 0
    assert figure(d, "vllm_profile_windows") == 14
    raw = d["last_raw_window"]
    # The last closed window: polls 104..112, 9 vLLM polls, no running count.
    assert raw["engine_polls"] == 9 and raw["running"] is None
    with gzip.open(src, "rt") as f:
        polls = [e for e in map(json.loads, f) if e.get("source") == "vllm"]
    assert raw["seconds"] == pytest.approx(polls[112]["t"] - polls[104]["t"], rel=1e-9)
    text = cli("replay", str(out), "--diagnose", *fixed)
    assert "No evaluable window. The last window, as is: seconds 2" in text
    assert "engine_polls 9" in text
