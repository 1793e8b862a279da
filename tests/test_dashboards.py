"""Grafana dashboards: generated from code, linted like grafana/dashboard-linter would, and every
panel query run against a real Prometheus that has scraped the exporter."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Exporter, Prometheus, wait_for
from tests.paths import FIX, ROOT
from tests.tools import load_script

GRAFANA = ROOT / "deploy" / "grafana"
DS = {"type": "prometheus", "uid": "${datasource}"}
UNITS = {"percentunit", "s", "bytes", "watt", "joule", "currencyUSD", "short", "none", "reqps",
         "celsius"}  # fmt: skip


def generator() -> Any:
    return load_script(GRAFANA / "generate.py")


DASHBOARDS = {name: json.loads((GRAFANA / name).read_text()) for name in generator().DASHBOARDS}


def panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in d["panels"] if p["type"] != "row"]


def targets() -> list[tuple[str, str, str]]:
    """Every query a dashboard runs: its panels' and its annotations'."""
    return [
        (name, a["name"], a["expr"])
        for name, d in DASHBOARDS.items()
        for a in d["annotations"]["list"]
    ] + [
        (name, p["title"], t["expr"])
        for name, d in DASHBOARDS.items()
        for p in panels(d)
        for t in p["targets"]
    ]


def test_committed_json_is_the_generated_json() -> None:
    chart = generator().CHART_FILES
    for name, text in generator().render().items():
        assert (GRAFANA / name).read_text() == text, f"run deploy/grafana/generate.py ({name})"
        # The chart's own copy: a plain file (a packaged chart holds no link out of itself).
        assert not (chart / name).is_symlink() and (chart / name).read_text() == text, name


@pytest.mark.parametrize("name", DASHBOARDS)
def test_dashboard_conventions(name: str) -> None:
    d = DASHBOARDS[name]
    assert d["uid"] and d["tags"] and d["editable"] is False
    assert 36 <= d["schemaVersion"] <= 41
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for v in ("cluster", "namespace", "model", "pod", "instance"):
        assert variables[v]["datasource"] == DS and variables[v]["refresh"] == 2
    # The cluster label's name is one hidden constant (the chart sets it).
    assert variables["cluster_label"]["type"] == "constant"
    assert variables["cluster_label"]["hide"] == 2 and variables["cluster_label"]["query"]
    # "All" instances are the ones listed for the namespace, model and pod chosen: no allValue.
    assert variables["instance"]["allValue"] is None
    # Every panel sits under a row; rows do not overlap panels.
    assert d["panels"][0]["type"] == "row"
    assert {"type": "dashboards", "tags": ["vllm-profile"]}.items() <= d["links"][0].items()
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine


@pytest.mark.parametrize("name", DASHBOARDS)
def test_panel_lint(name: str) -> None:
    for p in panels(DASHBOARDS[name]):
        assert p["title"] and len(p["description"]) > 20, p["title"]
        assert p["fieldConfig"]["defaults"]["unit"] in UNITS, p["title"]
        assert p["datasource"] == DS, p["title"]  # no hard-coded datasource UID
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS
            expr = t["expr"]
            assert '${cluster_label}=~"$cluster"' in expr, expr  # every query, every cluster
            if re.search(r"\bcluster_namespace_model(_gpu)?:vllm_profile_", expr):
                for var in ("namespace", "model"):  # recording rules carry these labels
                    assert f'{var}=~"${var}"' in expr, expr
            else:
                for var in ("namespace", "pod", "instance"):
                    assert f'{var}=~"${var}"' in expr, expr
            # Counters only inside rate(), over $__rate_interval, never a fixed window.
            for m in re.finditer(r"vllm_profile_\w+_total\b", expr):
                assert re.search(r"\brate\(\s*" + m.group(0), expr), expr
            for window in re.findall(r"\[([^\]]+)\]", expr):
                assert window == "$__rate_interval", expr


def concatenated(tmp: Path) -> tuple[Path, Path]:
    """A vLLM recording that changes configuration mid-way (saturation, then a restart into
    under-batching) served under a catalog model name, and 80 s of real H200 readings."""
    vllm = tmp / "vllm.jsonl.gz"
    with gzip.open(vllm, "wt") as out:
        for part in ("vllm032-cpu-c-saturation.jsonl.gz", "vllm032-cpu-b-underbatch.jsonl.gz"):
            with gzip.open(FIX / "vllm" / part, "rt") as f:
                for line in f:
                    e = json.loads(line)
                    if "recording" in e:
                        continue  # one header, at most, and only on the first line
                    if "body" in e:
                        e["body"] = e["body"].replace(
                            'model_name="tiny-llama"', 'model_name="meta-llama/Llama-3.1-8B"'
                        )
                    out.write(json.dumps(e) + "\n")
    gpu = tmp / "gpu.jsonl.gz"
    with gzip.open(gpu, "wt") as out:
        for lap in range(2):
            with gzip.open(FIX / "nvml" / "h200-probe.jsonl.gz", "rt") as f:
                for line in f:
                    e = json.loads(line)
                    if "recording" not in e:
                        e["t"] += lap * 60.0  # the second lap follows the first in time
                        out.write(json.dumps(e) + "\n")
    return vllm, gpu


CAPACITY_BOUND = re.compile(r"capacity_lower_requests_per_second|replicas_needed")


def grafana_regex(values: list[str]) -> str:
    """A multi-value variable as Grafana writes it into a Prometheus query."""
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


@pytest.mark.e2e
def test_every_panel_query_returns_data(tmp_path: Path) -> None:
    """Scraped as prometheus-operator would (namespace and pod target labels), each variable
    lists what it should, and with the variables chosen as a user would, every panel and
    annotation query returns data."""
    vllm, gpu = concatenated(tmp_path)
    # 8 s horizons so the configuration change gets its before/after comparison in ~40 s.
    exporter = Exporter(
        "--vllm-replay", str(vllm), "--gpu-replay", str(gpu), "--max-num-seqs", "8",
        "--horizon", "8s", "--slo-ttft", "1s", "--slo-tpot", "10ms",
    )  # fmt: skip
    instance = f"127.0.0.1:{exporter.port}"
    prom = Prometheus(
        tmp_path, [instance], rule_files=[ROOT / "deploy" / "prometheus" / "rules.yaml"],
        labels={"namespace": "inference", "pod": "vllm-0", "cluster": "east"},
    )  # fmt: skip
    try:
        wait_for(lambda: prom.query("vllm_profile_direction == 1"), 90, "a direction")
        wait_for(
            lambda: prom.query("cluster_namespace_model:vllm_profile_efficiency:ratio"), 20,
            "recording rules",
        )  # fmt: skip
        chosen = {"cluster": "east", "namespace": "inference", "model": "meta-llama/Llama-3.1-8B",
                  "pod": "vllm-0", "instance": instance}  # fmt: skip
        expected = {k: [v] for k, v in chosen.items()}
        subst: dict[str, str] = {}
        for name, d in DASHBOARDS.items():
            for var in d["templating"]["list"]:
                if var["type"] == "constant":
                    subst["{" + var["name"] + "}"] = var["query"]
                if var["type"] != "query":
                    continue
                query = var["query"]["query"]
                for k, v in subst.items():
                    query = query.replace(f"${k}", v)
                m = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
                assert m, var["query"]
                match, label = m.groups()
                assert prom.label_values(label, match) == expected[var["name"]], (name, var)
                subst[var["name"]] = grafana_regex(expected[var["name"]])
        missing = []
        for name, title, expr in targets():
            q = expr.replace("$__rate_interval", "1m")
            for k, v in subst.items():
                q = q.replace(f"${k}", v)
            assert "$" not in q, q
            if prom.query(q):
                continue
            # A replica's capacity bound is absent while it withholds (the replay's horizons
            # are too short for an answer): then the panel may be empty, and only then.
            if CAPACITY_BOUND.search(expr) and prom.query("vllm_profile_capacity_unavailable"):
                continue
            missing.append(f"{name} / {title}: {expr}")
        assert not missing, "panels without data:\n" + "\n".join(missing)
    finally:
        prom.stop()
        exporter.stop()


def test_absent_figures_say_no_traffic_and_rows_open_their_server() -> None:
    overview, fleet = (
        DASHBOARDS["vllm-profile-overview.json"],
        DASHBOARDS["vllm-profile-fleet.json"],
    )
    by_title = {p["title"]: p for p in panels(overview)}
    for title in ("Efficiency (est)", "Cost per 1M tokens", "Time to first token", "Goodput"):
        assert by_title[title]["fieldConfig"]["defaults"]["noValue"] == "no traffic"
    slo = by_title["Latency objectives met"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in slo] == [None, 0.95, 0.99]
    (table,) = [p for p in panels(fleet) if p["type"] == "table"]
    (link,) = table["fieldConfig"]["defaults"]["links"]
    assert link["url"].startswith(f"/d/{overview['uid']}/")
    assert "var-instance=${__data.fields.instance}" in link["url"]
    assert "${datasource:queryparam}" in link["url"]
