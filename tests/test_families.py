"""The family catalog's freshness gate: each family says which sources it needs fresh, and the
renderer alone applies it — a family is exported while those sources' data is in the latest
window and vanishes when one goes stale, whatever its row builder does."""

from __future__ import annotations

from dataclasses import replace

import pytest

from exporter.app import make_pipeline
from exporter.config import load_config
from exporter.export.collector import ExportSettings, metric_families
from exporter.export.families import WINDOW_FAMILIES
from exporter.pipeline import Snapshot
from exporter.scrape.replay import replay_ticks
from tests.paths import H200, SATURATION

SETTINGS = ExportSettings(version="t", horizon_seconds=60.0, poll_interval=0.25, max_num_seqs=4.0)


@pytest.fixture(scope="module")
def snap() -> Snapshot:
    """A real replay with every kind of figure: GPUs, a model of known size, a price, SLOs."""
    cfg = load_config({"max_num_seqs": "4", "model_params": "425600", "cost_per_hour": "3.5",
                       "slo_ttft": "1s", "slo_tpot": "100ms"}, {}, {})  # fmt: skip
    pipeline = make_pipeline(cfg)
    for tick in replay_ticks(SATURATION, H200):
        pipeline.add_tick(tick)
    return pipeline.snapshot


def exported(snap: Snapshot, engine: bool, gpu: bool) -> set[str]:
    stale = replace(snap, agg=replace(snap.agg, engine_fresh=engine, gpu_fresh=gpu))
    return {m.name.removeprefix("vllm_profile_") for m in metric_families(stale, SETTINGS)}


@pytest.mark.parametrize(("engine", "gpu"), [(False, True), (True, False), (False, False)])
def test_a_stale_source_takes_exactly_the_families_that_need_it(
    snap: Snapshot, engine: bool, gpu: bool
) -> None:
    fresh = exported(snap, True, True)
    kept = exported(snap, engine, gpu)
    up = {s for s, ok in (("engine", engine), ("gpu", gpu)) if ok}
    needs = {f.name: set(f.needs) for f in WINDOW_FAMILIES}
    for name in fresh:
        if name in needs:
            assert (name in kept) == (needs[name] <= up), name
    # The figures a person reads as "now" are among them, not only the catalog's word for it.
    if not engine:
        assert not {"generation_tokens_per_second", "efficiency_ratio", "requests_running"} & kept
    if not gpu:
        assert not {"gpu_utilization_ratio", "kv_headroom_bytes"} & kept


def test_every_family_of_the_horizon_was_exported_by_the_fresh_replay_or_says_why_not(
    snap: Snapshot,
) -> None:
    # Families this replay cannot show (no configuration change, no MFU counters, nothing
    # skipped): their needs are still declared, checked by reading the table.
    fresh = exported(snap, True, True)
    absent = {f.name for f in WINDOW_FAMILIES} - fresh
    assert absent <= {"config_epoch_info", "direction", "efficiency_delta_ratio",
                      "throughput_delta_ratio", "ttft_p99_delta_ratio", "mfu_flops_per_second",
                      "mfu_memory_bytes_per_second", "mfu_flops_ratio", "mfu_bandwidth_ratio",
                      "roofline_unavailable", "rule_skipped", "vllm_max_model_len",
                      # capacity answers after a minute of load at several batches (this replay
                      # has it withheld; tests/test_capacity.py has an answer)
                      *(f"capacity_{x}" for x in (
                        "requests_per_second", "lower_requests_per_second",
                        "upper_requests_per_second", "headroom_requests_per_second",
                        "concurrency_target", "tpot_requests_per_second",
                        "ttft_requests_per_second",
                        "max_num_seqs_requests_per_second", "kv_cache_requests_per_second",
                        "limit", "model_error_ratio"))}  # fmt: skip
    by_name = {f.name: f for f in WINDOW_FAMILIES}
    assert all(by_name[n].needs == ("engine",) for n in absent if n.startswith(("mfu_", "rule_")))
