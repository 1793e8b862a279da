"""docs/metrics.md and the exporter agree: the docs' tables against the family table (name, type,
labels, label codes), and every family in the table really exported in some case."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from exporter.app import load_catalog
from exporter.config import load_config
from exporter.derive.assess import assess
from exporter.derive.capacity import LIMITS, Capacity
from exporter.derive.capacity import REASONS as CAPACITY_REASONS
from exporter.derive.diagnosis import FIXES, diagnose
from exporter.derive.direction import Summary, compare
from exporter.derive.resolve import RooflineSettings
from exporter.derive.roofline_reasons import REASONS
from exporter.derive.rules import SKIP_REASONS, evaluate_window
from exporter.derive.slo import SloTargets
from exporter.engines import error_reasons
from exporter.export.collector import (
    ALL_FAMILIES,
    ExportSettings,
    metric_families,
    schedule_families,
)
from exporter.loop import LoopStats
from exporter.pipeline import Pipeline, Snapshot
from exporter.samples import ModelsInfo
from exporter.scrape.replay import replay_ticks
from tests.paths import FIX, ROOT


def exported_names() -> set[str]:
    """Every family a fully-fed pipeline exports: vLLM, GPU, durations, models, occupancy,
    roofline and economics; plus the MFU and unavailability families from a constructed case."""
    catalog = load_catalog(load_config({}, {}, {}))
    p = Pipeline(
        horizon_seconds=60,
        poll_interval=0.25,
        roofline=RooflineSettings(
            catalog=catalog, model_params=(8e9, None), slo=SloTargets(ttft=0.05, tpot=0.005)
        ),  # fmt: skip
        max_num_seqs=64,
    )
    ticks = replay_ticks(
        FIX / "vllm" / "vllm032-cpu-b-underbatch.jsonl.gz", FIX / "nvml" / "h200-probe.jsonl.gz"
    )
    for i, t in enumerate(ticks):
        models = ModelsInfo(0.0, 1024) if i == 0 else None
        p.add_tick(replace(t, engine_duration=0.005, gpu_duration=0.001, models=models))
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
        p.snapshot,
        direction=compare(Summary(0.1, 4.0, 100.0, 0.5), Summary(0.2, 4.0, 150.0, 0.5)),
        epoch=1,
        epoch_cause="engine_restart_same_config",
    )
    answered = replace(p.snapshot, capacity=Capacity(
        None, 8.0, 7.0, 9.0, "tpot",
        {"tpot": 8.0, "ttft": 8.5, "max_num_seqs": 9.0, "kv_cache": 10.0},
        headroom=2.0, concurrency=30.0, load=6.0, model_error=0.01, points=40, batch_high=32.0,
    ))  # fmt: skip
    stats = LoopStats()
    stats.recent_lateness.append(0.01)
    families = [f for s in (p.snapshot, other, compared, answered)
                for f in metric_families(s, settings)]  # fmt: skip
    return {
        f.name + "_total" if f.type == "counter" else f.name
        for f in [*families, *schedule_families(stats)]
    }


DOCS = (ROOT / "docs" / "metrics.md").read_text()


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name → (type, labels) from the docs' tables."""
    rows = re.findall(r"^\| `(vllm_profile_[a-z0-9_]+)` \| (\w+) \|([^|]*)\|", DOCS, flags=re.M)
    out = {}
    for name, kind, labels in rows:
        assert name not in out, f"{name} documented twice"
        out[name] = (kind, tuple(re.findall(r"`([A-Za-z_]+)`", labels)))
    return out


def test_docs_table_is_the_family_table() -> None:
    table = {f.exposed_name: (f.type, f.labels) for f in ALL_FAMILIES}
    assert len(table) == len(ALL_FAMILIES), "a family name appears twice in the table"
    docs = documented()
    assert table.keys() - docs.keys() == set(), "in the family table but not documented"
    assert docs.keys() - table.keys() == set(), "documented but not in the family table"
    for name, (kind, labels) in table.items():
        assert docs[name] == (kind, labels), name


def test_every_family_in_the_table_is_exported() -> None:
    # The table could hold a family whose rows are never produced: a fully-fed pipeline and the
    # constructed cases export every one of them.
    assert exported_names() == {f.exposed_name for f in ALL_FAMILIES}


def row(name: str) -> str:
    return next(line for line in DOCS.splitlines() if line.startswith(f"| `{name}` |"))


def test_label_codes_are_documented() -> None:
    # Every code a label can take is listed where its family is documented.
    codes = {
        "vllm_profile_poll_errors_total": {r for rs in error_reasons().values() for r in rs},
        "vllm_profile_rule_skipped": set(SKIP_REASONS),
        "vllm_profile_issue_info": set(FIXES),
        "vllm_profile_roofline_unavailable": set(REASONS),
        "vllm_profile_capacity_unavailable": set(CAPACITY_REASONS),
        "vllm_profile_capacity_limit": set(LIMITS),
    }
    for name, values in codes.items():
        shown = set(re.findall(r"`([a-z_0-9]+)`", row(name)))
        assert values - shown == set(), name


# The project explains itself: what the code and docs cite is in the repository.
CITING = ("exporter", "tests", "bench", "scripts", "deploy", "docs", "README.md", "CHANGELOG.md")


def cited_texts() -> Iterator[tuple[Path, str]]:
    for top in CITING:
        path = ROOT / top
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for f in files:
            if f.suffix in (".py", ".md", ".yaml", ".tpl", ".txt") and "fixtures" not in f.parts:
                yield f, f.read_text(errors="replace")


def test_nothing_cites_a_document_outside_the_repository() -> None:
    outside = re.compile(r"SPEC §|SPEC\.md|\bthe seed\b|seed's|\.\./shared|profile-docs")
    found = [f"{f.relative_to(ROOT)}: {m.group(0)}" for f, text in cited_texts()
             for m in outside.finditer(text) if f != Path(__file__)]  # fmt: skip
    assert not found, found


def anchor(heading: str) -> str:
    """A Markdown heading's anchor as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_docs_reference_resolves() -> None:
    """``docs/NAME.md`` and ``docs/NAME.md#anchor`` wherever they are written (runbook links
    included): the file exists and has that heading or ``<a id>``."""
    refs = {m.groups() for _, text in cited_texts()
            for m in re.finditer(r"docs/([a-z_-]+\.md)(?:#([a-z0-9-]+))?", text)}  # fmt: skip
    assert len(refs) > 10
    for name, frag in sorted(refs, key=lambda r: (r[0], r[1] or "")):
        doc = ROOT / "docs" / name
        assert doc.is_file(), f"docs/{name} is cited but does not exist"
        if frag:
            text = doc.read_text()
            ids = {anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
            ids |= set(re.findall(r'<a id="([^"]+)"></a>', text))
            assert frag in ids, f"docs/{name}#{frag}: no such heading or anchor"


def test_every_peak_a_catalog_may_lack_has_its_reason() -> None:
    # --compute-peak takes these values; each one's missing peak is a reason with its fix.
    from exporter.derive.roofline_reasons import no_peak
    from exporter.options import OPTIONS

    (option,) = [o for o in OPTIONS if o.dest == "compute_peak"]
    peaks = option.choices or ()
    assert set(peaks) == {"tensor", "fp32"}
    for peak in peaks:
        assert no_peak(peak) in REASONS
