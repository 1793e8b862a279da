"""docs/metrics.md and the exporter's output name the same metric families."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from exporter.app import load_catalog
from exporter.config import load_config
from exporter.derive.assess import assess
from exporter.derive.diagnosis import diagnose
from exporter.derive.direction import Summary, compare
from exporter.derive.resolve import RooflineSettings
from exporter.derive.rules import evaluate_window
from exporter.export.collector import ExportSettings, metric_families, schedule_families
from exporter.loop import LoopStats
from exporter.pipeline import Pipeline, Snapshot
from exporter.samples import ModelsInfo
from exporter.scrape.replay import replay_ticks

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"


def exported_names() -> set[str]:
    """Every family a fully-fed pipeline exports: vLLM, GPU, durations, models, occupancy,
    roofline and economics; plus the MFU and unavailability families from a constructed case."""
    catalog = load_catalog(load_config({}, {}, {}))
    p = Pipeline(
        horizon_seconds=60,
        poll_interval=0.25,
        roofline=RooflineSettings(catalog=catalog, model_params=(8e9, None)),
        max_num_seqs=64,
    )
    ticks = replay_ticks(
        FIX / "vllm" / "vllm032-cpu-b-underbatch.jsonl.gz", FIX / "nvml" / "h200-probe.jsonl.gz"
    )
    for i, t in enumerate(ticks):
        models = ModelsInfo(0.0, 1024) if i == 0 else None
        p.add_tick(replace(t, vllm_duration=0.005, gpu_duration=0.001, models=models))
    settings = ExportSettings("test", 60.0, 0.25, max_num_seqs=64.0)
    agg = replace(
        p.snapshot.agg, est_flops_per_second=1e14, est_bytes_per_second=1e12, model_name="x"
    )
    # Without --max-num-seqs, rules that need it are skipped (and say so).
    no_cap = diagnose([evaluate_window(p.horizon[-1].window, None)], agg, None, None)
    other = Snapshot(
        agg=agg, assessment=assess(agg, RooflineSettings(catalog=catalog)), diagnosis=no_cap
    )
    compared = replace(
        p.snapshot, direction=compare(Summary(0.1, 4.0, 100.0, 0.5), Summary(0.2, 4.0, 150.0, 0.5))
    )
    stats = LoopStats()
    stats.recent_lateness.append(0.01)
    families = [f for s in (p.snapshot, other, compared) for f in metric_families(s, settings)]
    return {
        f.name + "_total" if f.type == "counter" else f.name
        for f in [*families, *schedule_families(stats)]
    }


def documented_names() -> set[str]:
    text = (ROOT / "docs" / "metrics.md").read_text()
    return set(re.findall(r"^\| `(vllm_profile_[a-z0-9_]+)` \|", text, flags=re.M))


def test_docs_match_exporter() -> None:
    exported, documented = exported_names(), documented_names()
    assert exported - documented == set(), "exported but not documented"
    assert documented - exported == set(), "documented but never exported"
