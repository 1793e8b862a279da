"""A fleet: 20 exporters in two clusters, each serving a different real recording (H100 or H200
readings, 1 to 8 GPUs, TP 1 to 8, four models, every recorded load; two are SGLang servers),
scraped by one real Prometheus loaded with the shipped recording and alert rules. As under one
Thanos or Mimir, the clusters repeat each other's instance and job values: only the cluster
label tells them apart.

Each exporter serves its replay frozen (tests/fleet_member.py), so the /metrics this test reads
is the /metrics Prometheus scrapes: every fleet recording rule is checked against a computation
made here from those texts. Then every exporter replays the rest of its recording at once (its
counters step forward) and the hour-based rule is checked too. The fleet dashboard's queries run
as Grafana would with everything selected; what they cost Prometheus, the series each exporter
costs, and Prometheus's memory per series go to build/fleet-report.json.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Prometheus, free_port, terminate, wait_for
from tests.paths import FIX, H100, H200, ROOT
from tests.recordings import gpu_recording, renamed, sglang_recording
from tests.test_dashboards import CAPACITY_BOUND, DASHBOARDS, grafana_regex, panels

pytestmark = pytest.mark.e2e
N = 20
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
REPORT = ROOT / "build" / "fleet-report.json"

# recording → vLLM's --max-num-seqs when it was made (the recordings' own headers)
RECORDINGS = {"b-underbatch": 64, "c-saturation": 4, "d-kvpressure": 8, "e1-prefix-shared": 8,
              "e2-prefix-unique": 8, "e3-prefix-disabled": 8, "f-restart": 8}  # fmt: skip
SGLANG_MEMBERS = (N // 2 - 2, N - 2)  # one in each cluster
MODELS = ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.3-70B-Instruct",
          "Qwen/Qwen2.5-7B-Instruct", "acme/support-assistant")  # fmt: skip
# The fourth model is the operator's own, known through a catalog file.
CATALOG = "models:\n  Support Assistant 13B:\n    match: [support assistant]\n    params_b: 13\n"


@dataclass(eq=False)  # hashed by identity: a key of the texts read from it
class Member:
    index: int
    recording: str
    model: str
    probe: Path
    gpus: int  # = TP size
    options: dict[str, str]
    split: float = 0.5
    cluster: str = "east"
    engine: str = "vllm"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def labelled(self) -> str:
        """The instance label Prometheus gives it: a pod address, the same in both clusters."""
        return f"10.0.{self.index % (N // 2)}.7:9709"

    @property
    def key(self) -> tuple[str, str]:
        return self.cluster, self.labelled

    def start(self, tmp: Path) -> None:
        vllm = tmp / f"{self.recording}-{MODELS.index(self.model)}.jsonl.gz"
        if vllm.exists():
            pass
        elif self.engine == "sglang":
            sglang_recording(vllm, self.model, seconds=150.0)
        else:
            renamed(FIX / "vllm" / f"vllm032-cpu-{self.recording}.jsonl.gz", vllm, self.model)
        gpu = tmp / f"{self.probe.stem}-{self.gpus}.jsonl.gz"
        if not gpu.exists():
            gpu_recording(gpu, self.gpus, probe=self.probe, seconds=150)
        options = [f"--option={k}={v}" for k, v in self.options.items()]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fleet_member", "--listen", self.instance,
             "--vllm", str(vllm), "--gpu", str(gpu), "--split", str(self.split), *options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            start_new_session=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.append(line.strip())

    def said(self, word: str) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"member {self.index} exited: {self.lines}")
        return word in self.lines

    def metrics(self) -> str:
        r = requests.get(f"http://{self.instance}/metrics", timeout=10)
        r.raise_for_status()
        return r.text

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)


def fleet(tmp: Path) -> list[Member]:
    catalog = tmp / "catalog.yaml"
    catalog.write_text(CATALOG)
    members = []
    ports: set[int] = set()  # each its own: two random picks may meet
    recordings = list(RECORDINGS)
    for i in range(N):
        recording, model = recordings[i % len(recordings)], MODELS[i % len(MODELS)]
        tp = (1, 2, 4, 8)[(i // len(MODELS)) % 4]
        if "70B" in model:
            tp = max(tp, 4)  # 140 GB of bf16 weights
        options = {"max-num-seqs": str(RECORDINGS[recording]), "tensor-parallel-size": str(tp),
                   "horizon": "10m"}  # fmt: skip
        if i % 5 == 0:
            options["cost-per-hour"] = str(2.5 * tp + i)  # the operator's own price
        elif i % 5 == 1:
            options["price"] = "spot"
        if model == MODELS[3]:
            options["catalog-file"] = str(catalog)
        # The restart recording serves its first 30%: the restart comes with the second part.
        split = 0.3 if recording == "f-restart" else 0.5
        cluster = "east" if i < N // 2 else "west"
        engine = "vllm"
        if i in SGLANG_MEMBERS:  # SGLang servers of the same models, in one fleet with vLLM's
            engine, recording, split = "sglang", "sglang", 0.5
            options["max-num-seqs"] = "8"  # its --max-running-requests
        port = free_port()
        while port in ports:
            port = free_port()
        ports.add(port)
        members.append(
            Member(
                i, recording, model, (H100, H200)[i % 2], tp, options, split, cluster, engine, port
            )  # fmt: skip
        )
    return members


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def total(s: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float | None:
    """The sum of a family's series (a cost carries its price_source label); None: absent."""
    values = [v for _, v in s.get(name, [])]
    return sum(values) if values else None


Service = tuple[str, str, str]  # (cluster, namespace, model): what the fleet rules sum over
LEVEL = "cluster_namespace_model:vllm_profile_"


def service(m: Member, text: str) -> Service:
    ((info, _),) = samples(text)["vllm_profile_info"]
    return m.cluster, NAMESPACE[m.index % 2], info["model"]


NAMESPACE = ("team-a", "team-b")


def by_service(texts: dict[Member, str]) -> dict[str, dict[Service, float]]:
    """What each fleet recording rule should record, computed from the exporters' own /metrics:
    sums over the exporters of each (cluster, namespace, model), each exporter's model from
    vllm_profile_info."""
    sums: dict[Service, dict[str, float]] = {}
    for member, text in texts.items():
        s = samples(text)
        m = sums.setdefault(service(member, text), {})
        tps = total(s, "vllm_profile_generation_tokens_per_second")
        cost = total(s, "vllm_profile_cost_per_hour_dollars")
        values = {
            "tps": tps,
            "cost": cost,
            # While busy: only the servers with an active throughput, and their cost.
            "busy_cost": cost if tps else None,
            "recoverable": total(s, "vllm_profile_wall_clock_recoverable_cost_per_hour_dollars"),
            "tps_with_roofline": (
                tps if total(s, "vllm_profile_efficiency_ratio") is not None else None
            ),
            "ceiling": total(s, "vllm_profile_decode_hardware_ceiling_tokens_per_second"),
            "load": total(s, "vllm_profile_capacity_load_requests_per_second"),
        }
        for key, value in values.items():
            if value is not None:
                m[key] = m.get(key, 0.0) + value
    expected: dict[str, dict[Service, float]] = {
        f"{LEVEL}cost_per_hour_dollars:sum": {},
        f"{LEVEL}recoverable_cost_per_hour_dollars:sum": {},
        f"{LEVEL}active_cost_per_million_tokens_dollars:ratio": {},
        f"{LEVEL}efficiency:ratio": {},
        f"{LEVEL}capacity_load_requests_per_second:sum": {},
    }
    for svc, m in sums.items():
        for rule, key in (("cost_per_hour_dollars:sum", "cost"),
                          ("recoverable_cost_per_hour_dollars:sum", "recoverable"),
                          ("capacity_load_requests_per_second:sum", "load")):  # fmt: skip
            if key in m:
                expected[f"{LEVEL}{rule}"][svc] = m[key]
        if "busy_cost" in m and m.get("tps", 0) > 0:
            per_million = m["busy_cost"] / (m["tps"] * 3600) * 1e6
            expected[f"{LEVEL}active_cost_per_million_tokens_dollars:ratio"][svc] = per_million
        if "tps_with_roofline" in m and "ceiling" in m:
            efficiency = m["tps_with_roofline"] / m["ceiling"]
            expected[f"{LEVEL}efficiency:ratio"][svc] = efficiency
    return expected


def recorded(prom: Prometheus, rule: str) -> dict[Service, float]:
    return {
        (r["metric"].get("cluster", ""), r["metric"].get("namespace", ""), r["metric"]["model"]):
        float(r["value"][1])
        for r in prom.query(rule)
    }  # fmt: skip


def mismatches(prom: Prometheus, expected: dict[str, dict[Service, float]]) -> list[str]:
    """Rules whose value differs from the computation by more than float summation can."""
    out = []
    for rule, want in expected.items():
        got = recorded(prom, rule)
        if got.keys() != want.keys() or any(
            got[m] != pytest.approx(want[m], rel=1e-9) for m in want
        ):
            out.append(f"{rule}: recorded {got}, computed {want}")
    return out


def counters(texts: dict[Member, str]) -> dict[Member, tuple[Service, float, float]]:
    """member → (its service, dollars accrued, tokens generated): the wall-clock counters."""
    out = {}
    for member, text in texts.items():
        s = samples(text)
        cost = total(s, "vllm_profile_observed_cost_dollars_total")
        tokens = total(s, "vllm_profile_observed_generation_tokens_total")
        assert cost is not None and tokens is not None, member.index
        out[member] = (service(member, text), cost, tokens)
    return out


def heap_bytes(prom: Prometheus) -> tuple[float, float]:
    """Prometheus's live heap right after a garbage collection, and its head series."""
    requests.get(prom.url + "/debug/pprof/heap", params={"gc": "1"}, timeout=30).raise_for_status()
    s = samples(requests.get(prom.url + "/metrics", timeout=10).text)
    heap, series = total(s, "go_memstats_heap_inuse_bytes"), total(s, "prometheus_tsdb_head_series")
    assert heap is not None and series is not None
    return heap, series


def test_a_fleet_of_twenty(tmp_path: Path) -> None:
    members = fleet(tmp_path)
    by_key = {m.key: m for m in members}
    assert len(by_key) == N and len({m.labelled for m in members}) == N // 2
    report: dict[str, Any] = {"exporters": N}
    labels = {m.instance: {"cluster": m.cluster, "instance": m.labelled,
                           "namespace": NAMESPACE[m.index % 2], "pod": f"vllm-{m.index}"}
              for m in members}  # fmt: skip
    # Prometheus first, its targets not up yet: its heap before the fleet's series.
    prom = Prometheus(
        tmp_path, [m.instance for m in members], rule_files=[RULES], target_labels=labels
    )
    try:
        heap0, series0 = heap_bytes(prom)
        since = time.time()  # the history's start, for the dashboard's query cost
        for m in members:
            m.start(tmp_path)
        wait_for(lambda: all(m.said("ready") for m in members), 180, "every exporter serving")
        wait_for(lambda: prom.value('count(up{job="vllm-profile"} == 1)') == N, 30, "all up")

        # Every rule evaluates without error against twenty targets (no duplicate-series
        # matching although instance and job repeat across the clusters, no template failing).
        def rules_health() -> list[str]:
            groups = requests.get(prom.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
            return [f"{r['name']}: {r.get('lastError')}" for g in groups for r in g["rules"]
                    if r["health"] != "ok"]  # fmt: skip

        efficiency = f"count({LEVEL}efficiency:ratio)"
        wait_for(lambda: prom.value(efficiency) == 2 * len(MODELS), 30,
                 "the fleet rules evaluated")  # fmt: skip

        # Frozen: the exporters serve now what Prometheus scraped and the rules summed.
        texts = {m: m.metrics() for m in members}
        for m, text in texts.items():  # each profiled as its own engine
            s = samples(text)
            ((info, _),) = s["vllm_profile_info"]
            up = {labels["source"] for labels, _ in s["vllm_profile_up"]} - {"nvml"}
            assert (info["engine"], up) == (m.engine, {m.engine}), m.index
        expected = by_service(texts)
        services = {service(m, t) for m, t in texts.items()}
        assert {c for c, _, _ in services} == {"east", "west"}
        assert all(len(v) == len(services) for v in expected.values()), expected
        wait_for(lambda: not mismatches(prom, expected), 30, "the rules equal the computation")
        assert rules_health() == []
        # No counter has moved since Prometheus first scraped it: no tokens in the last hour,
        # so no hour-based price per token (absent, never NaN or +Inf).
        hour = f"{LEVEL}wall_clock_cost_per_million_tokens_dollars:ratio1h"
        assert prom.query(hour) == []

        # Enough scrapes of the frozen counters that increase()'s extrapolation stays small.
        samples_a = "min(count_over_time(vllm_profile_observed_generation_tokens_total[1h]))"
        wait_for(lambda: (prom.value(samples_a) or 0) >= 40, 90, "40 scrapes of every exporter")

        # The rest of every recording at once: the counters step forward.
        before = counters(texts)
        for m in members:
            assert m.proc is not None
            m.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: all(m.said("advanced") for m in members), 120, "every exporter advanced")
        texts = {m: m.metrics() for m in members}
        after = counters(texts)
        wait_for(lambda: not mismatches(prom, by_service(texts)), 30, "the rules after the step")

        # The wall-clock figures from the counters, per service: Σ dollars and Σ tokens accrued.
        # increase() and rate() extrapolate each series past its first and last samples, by at
        # most half an average interval at the start and 1.1 at the end (Prometheus's rule): a
        # factor in [1, 1 + 1.6 / (samples - 1)] on each exporter's dollars and tokens alike.
        want: dict[Service, tuple[float, float]] = {}
        for member, (svc, cost, tokens) in after.items():
            _, cost0, tokens0 = before[member]
            dollars, toks = want.get(svc, (0.0, 0.0))
            want[svc] = (dollars + cost - cost0, toks + tokens - tokens0)
        assert all(toks > 0 for _, toks in want.values()), want
        fewest = prom.value(samples_a)
        assert fewest is not None and fewest >= 40
        slack = 1.6 / (fewest - 1)

        def within(rule: str, exact: Callable[[float, float], float]) -> bool:
            got = recorded(prom, rule)
            return got.keys() == want.keys() and all(
                exact(*want[k]) <= got[k] * (1 + 1e-9)
                and got[k] <= exact(*want[k]) * (1 + slack) * (1 + 1e-9)
                for k in want
            )

        # The hour's price per 1M tokens: the same factor on dollars and tokens cancels, so
        # within it either way.
        def hour_matches() -> bool:
            got = recorded(prom, hour)
            return got.keys() == want.keys() and all(
                want[k][0] / want[k][1] * 1e6 / (1 + slack)
                <= got[k]
                <= want[k][0] / want[k][1] * 1e6 * (1 + slack)
                for k in want
            )

        wait_for(hour_matches, 30, f"{hour} within {slack:.1%} of Σ dollars / Σ tokens")
        # The fleet's throughput: every token of the step is inside the last 5 minutes, so the
        # 5-minute rate is Σ tokens / 300 s, times the extrapolation factor.
        rate = f"{LEVEL}generation_tokens:rate5m"
        wait_for(lambda: within(rate, lambda dollars, toks: toks / 300), 30,
                 f"{rate} within {slack:.1%} of Σ tokens / 300 s")  # fmt: skip
        report["hour_rule_tolerance"] = slack
        assert rules_health() == []

        # The fleet dashboard, everything selected as Grafana writes it: each variable lists the
        # fleet, each server panel has a row for every exporter, each model panel every service.
        (board,) = [d for name, d in DASHBOARDS.items() if "fleet" in name]
        subst: dict[str, str] = {}
        listed: dict[str, list[str]] = {}
        for var in board["templating"]["list"]:
            if var["type"] == "constant":
                subst["{" + var["name"] + "}"] = var["query"]
            if var["type"] != "query":
                continue
            query = var["query"]["query"]
            for k, v in subst.items():
                query = query.replace(f"${k}", v)
            match, label = query[len("label_values(") : -1].rsplit(", ", 1)
            listed[var["name"]] = prom.label_values(label, match)
            subst[var["name"]] = var.get("allValue") or grafana_regex(listed[var["name"]])
        assert listed["cluster"] == ["east", "west"]
        assert sorted(listed["instance"]) == sorted({m.labelled for m in members})
        assert sorted(listed["model"]) == sorted(MODELS)
        assert len(listed["pod"]) == N and listed["namespace"] == list(NAMESPACE)
        queries = [(p["title"], t["expr"], bool(t.get("instant")))
                   for p in panels(board) for t in p["targets"]]  # fmt: skip
        queries += [(a["name"], a["expr"], False) for a in board["annotations"]["list"]]
        costs = {}
        for title, expr, instant in queries:
            q = expr.replace("$__rate_interval", "1m")
            for k, v in subst.items():
                q = q.replace(f"${k}", v)
            result = prom.query(q)
            if not result and CAPACITY_BOUND.search(expr):
                # No member answers capacity (its replay is too short): the bound and the
                # replicas are absent then, and only then.
                assert len(prom.query("vllm_profile_capacity_unavailable == 1")) == N, title
                continue
            assert result, f"{title}: {q} returned nothing"
            found = {(r["metric"].get("cluster"), r["metric"].get("instance")) for r in result}
            if "changes(" in expr:  # the configuration epochs: the restarted servers alone
                assert found == {m.key for m in members if m.recording == "f-restart"}
            elif "config_id" in expr:  # new configurations: every one, in its first minutes
                got = {(r["metric"]["cluster"], r["metric"]["namespace"], r["metric"]["model"])
                       for r in result}  # fmt: skip
                assert got == services, title
            elif "instance=~" in expr:
                assert found == set(by_key), title
            elif "model=~" in expr:
                got = {(r["metric"]["cluster"], r["metric"]["namespace"], r["metric"]["model"])
                       for r in result}  # fmt: skip
                assert got == services, title
            costs[f"{title}: {expr}"] = query_cost(prom, q, instant, since)
        report["dashboard_queries"] = costs
        report["dashboard_samples_total"] = sum(c["samples"] for c in costs.values())
        report["dashboard_seconds_total"] = sum(c["seconds"] for c in costs.values())
        report["history_seconds"] = time.time() - since

        # What the fleet costs Prometheus: series per exporter, and heap per series.
        counted = prom.query('count by (cluster, instance) ({job="vllm-profile"})')
        per = {(r["metric"]["cluster"], r["metric"]["instance"]): float(r["value"][1])
               for r in counted}  # fmt: skip
        assert per.keys() == by_key.keys()
        for key, n in per.items():
            assert n <= 160 + 12 * by_key[key].gpus, (key, n)
        report["series_per_exporter"] = {"min": min(per.values()), "max": max(per.values())}
        heap1, series1 = heap_bytes(prom)
        report["prometheus_heap_bytes_per_series"] = (heap1 - heap0) / (series1 - series0)
        report["head_series"] = series1
    finally:
        for m in members:
            m.stop()
        prom.stop()
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2, sort_keys=True))
    print(json.dumps({k: v for k, v in report.items() if k != "dashboard_queries"}, indent=2))


def query_cost(prom: Prometheus, q: str, instant: bool, since: float) -> dict[str, float]:
    """What one panel's query costs Prometheus: the samples it touched and the seconds it took.
    A graph is drawn as Grafana draws an hour on a wide panel, 720 points, here spread over the
    whole history the test has (at 1 s scrapes: denser than a real hour at 15 s); a table is one
    instant query."""
    end = time.time()
    if instant:
        params: dict[str, Any] = {"query": q, "time": end}
        path = "/api/v1/query"
    else:
        params = {"query": q, "start": since, "end": end, "step": max(0.001, (end - since) / 720)}
        path = "/api/v1/query_range"
    r = requests.get(prom.url + path, params={**params, "stats": "all"}, timeout=30)
    r.raise_for_status()
    stats = r.json()["data"]["stats"]
    return {"samples": float(stats["samples"]["totalQueryableSamples"]),
            "seconds": float(stats["timings"]["execTotalTime"])}  # fmt: skip
