"""Grafana dashboards: generated from code, linted like grafana/dashboard-linter would, and every
panel query run against a real Prometheus that has scraped the exporter."""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Exporter, Prometheus, wait_for

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "deploy" / "grafana"
FIX = ROOT / "tests" / "fixtures"
DS = {"type": "prometheus", "uid": "${datasource}"}
UNITS = {"percentunit", "s", "bytes", "watt", "joule", "currencyUSD", "short", "none", "reqps",
         "celsius"}  # fmt: skip


def generator() -> Any:
    spec = importlib.util.spec_from_file_location("generate", GRAFANA / "generate.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


DASHBOARDS = {name: json.loads((GRAFANA / name).read_text()) for name in generator().DASHBOARDS}


def targets() -> list[tuple[str, str, str]]:
    return [
        (name, p["title"], t["expr"])
        for name, d in DASHBOARDS.items()
        for p in d["panels"]
        for t in p["targets"]
    ]


def test_committed_json_is_the_generated_json() -> None:
    for name, text in generator().render().items():
        assert (GRAFANA / name).read_text() == text, f"run deploy/grafana/generate.py ({name})"


@pytest.mark.parametrize("name", DASHBOARDS)
def test_dashboard_conventions(name: str) -> None:
    d = DASHBOARDS[name]
    assert d["uid"] and d["tags"] and d["editable"] is False
    assert 36 <= d["schemaVersion"] <= 41
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for v in ("job", "instance", "model"):
        assert variables[v]["datasource"] == DS and variables[v]["refresh"] == 2
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
    for p in DASHBOARDS[name]["panels"]:
        assert p["title"] and len(p["description"]) > 20, p["title"]
        assert p["fieldConfig"]["defaults"]["unit"] in UNITS, p["title"]
        assert p["datasource"] == DS, p["title"]  # no hard-coded datasource UID
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS
            expr = t["expr"]
            if re.search(r"\bmodel:vllm_profile_", expr):
                assert 'model=~"$model"' in expr  # recording rules carry the model label
            else:
                assert 'job=~"$job"' in expr and 'instance=~"$instance"' in expr, expr
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


@pytest.mark.e2e
def test_every_panel_query_returns_data(tmp_path: Path) -> None:
    vllm, gpu = concatenated(tmp_path)
    # 8 s horizons so the configuration change gets its before/after comparison in ~40 s.
    exporter = Exporter(
        "--vllm-replay", str(vllm), "--gpu-replay", str(gpu), "--max-num-seqs", "8",
        "--horizon", "8s", "--slo-ttft", "1s", "--slo-tpot", "10ms",
    )  # fmt: skip
    prom = Prometheus(
        tmp_path, [f"127.0.0.1:{exporter.port}"],
        rule_files=[ROOT / "deploy" / "prometheus" / "rules.yaml"],
    )  # fmt: skip
    try:
        wait_for(lambda: prom.query("vllm_profile_direction == 1"), 90, "a direction")
        wait_for(lambda: prom.query("model:vllm_profile_efficiency:ratio"), 20, "recording rules")
        missing = []
        for name, title, expr in targets():
            q = (
                expr.replace("$job", ".+").replace("$instance", ".+").replace("$model", ".+")
                .replace("$__rate_interval", "1m")
            )  # fmt: skip
            if not prom.query(q):
                missing.append(f"{name} / {title}: {expr}")
        assert not missing, "panels without data:\n" + "\n".join(missing)
    finally:
        prom.stop()
        exporter.stop()
