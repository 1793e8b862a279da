"""Capacity against the truth, replayed: real vLLM observations recorded by bench/capacity.py,
each with the highest Poisson rate vLLM's own benchmark client found meeting the objectives.
The pass criteria are docs/capacity.md's; the replay is the pipeline as ``serve`` runs it.

Where a shape misses a criterion today, :data:`MISSES` says so and why, and its test is
expected to fail (strictly: it fails the run the day it passes, so the record is kept true).
docs/capacity.md's results table has the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.derive.capacity import REASONS
from tests import capacity_check as check

FIXTURES = Path(__file__).parent / "fixtures" / "capacity"
TRUTHS = json.loads((FIXTURES / "truths.json").read_text())
SHAPES = sorted(TRUTHS)
RESTART = json.loads((FIXTURES / "restart.json").read_text())

# (criterion, shape) -> why it is missed today.
MISSES = {
    ("within_15", "kv-bound"): (
        "8.9 req/s against 10.7 (-17%): the KV cache's and TPOT's bounds (9.3, -14%) and the "
        "wait for a KV slot below them; the truth's 40 s probes may hide a queue that builds "
        "slowly (not yet re-checked with longer ones)"
    ),
    ("covers", "all"): (
        "3 of 5: decode-heavy's interval (31.8-33.7) and kv-bound's (8.2-9.6) stop short of "
        "the truth: the linear step fit overstates the step at batches beyond those seen"
    ),
    ("overload", "prefix-heavy"): (
        "from 47 s into 1.3x the truth the answer (37-48 req/s, TPOT) is above the load: TPOT "
        "p99 grows slowly and noisily with this shape's load (probes at 28.7 and 41.7 req/s "
        "missed the 8 ms objective by 10% and 17%), and the fit refreshed with the overload's "
        "own windows puts the limit past it"
    ),
    ("restart_answer", "restart"): (
        "21.2 req/s against 25.5 (-17%) at --max-num-seqs 8: the fit, from batches up to 7.4, "
        "puts the step at the cap's batch at 3.9 ms where the truth's server ran it at ~3.3"
    ),
}


def expected(criterion: str, shape: str) -> list[pytest.MarkDecorator]:
    why = MISSES.get((criterion, shape))
    return [pytest.mark.xfail(reason=why, strict=True)] if why else []


def per_shape(criterion: str, shapes: list[str]) -> list[object]:
    return [pytest.param(s, marks=expected(criterion, s), id=s) for s in shapes]


@pytest.fixture(scope="module")
def seen() -> dict[str, check.Observed]:
    out = {}
    for shape in SHAPES:
        t = TRUTHS[shape]
        out[shape] = check.observe(FIXTURES / f"{shape}.jsonl.gz", t["tpot_objective_s"],
                                   check.marks(t["marks"]))  # fmt: skip
    return out


@pytest.mark.parametrize("shape", per_shape("within_15", SHAPES))
def test_at_60_percent_within_15_percent(seen: dict[str, check.Observed], shape: str) -> None:
    """At 50-70% of the truth: within ±15%, or withheld for a reason of the table."""
    c = seen[shape].main
    assert c is not None
    ok = check.within(c, TRUTHS[shape]["truth"], 0.15)
    if ok is None:
        assert c.withheld in REASONS, c
    else:
        assert ok, (c.requests_per_second, TRUTHS[shape]["truth"])


def test_at_most_one_shape_withheld_at_60_percent(seen: dict[str, check.Observed]) -> None:
    withheld = [s for s in SHAPES if (c := seen[s].main) is None or c.requests_per_second is None]
    assert len(withheld) <= 1, withheld


@pytest.mark.xfail(reason=MISSES[("covers", "all")], strict=True)
def test_the_interval_covers_the_truth_in_all_shapes_but_one(
    seen: dict[str, check.Observed],
) -> None:
    covered = [s for s in SHAPES if check.covers(seen[s].main, TRUTHS[s]["truth"],
                                                 TRUTHS[s]["truth_missed_at"])]  # fmt: skip
    assert len(covered) >= len(SHAPES) - 1, covered


def test_the_limit_is_named_in_all_shapes_but_one(seen: dict[str, check.Observed]) -> None:
    named = [s for s in SHAPES if check.limit_matches(seen[s].main, TRUTHS[s]["truth_limit"])]
    assert len(named) >= len(SHAPES) - 1, named


@pytest.mark.parametrize("shape", per_shape("within_25", SHAPES))
def test_at_30_percent_within_25_percent_or_withheld(
    seen: dict[str, check.Observed], shape: str
) -> None:
    c = seen[shape].low
    assert c is not None
    assert check.within(c, TRUTHS[shape]["truth"], 0.25) in (True, None), c


@pytest.mark.parametrize("shape", per_shape("overload", SHAPES))
def test_an_overload_is_called_within_a_minute(seen: dict[str, check.Observed], shape: str) -> None:
    """1.3x the truth: `overloaded` within 60 s, and no positive headroom once the horizon
    holds the overload."""
    s = seen[shape]
    assert s.overloaded_after is not None and s.overloaded_after <= 60, s
    assert not s.headroom_positive_in_overload


LOOPED = [s for s in SHAPES if TRUTHS[s]["marks"]["closed"] is not None]


@pytest.mark.parametrize("shape", per_shape("closed", LOOPED))
def test_a_closed_loop_is_called_within_two_minutes(
    seen: dict[str, check.Observed], shape: str
) -> None:
    """16 clients in a loop: `closed_loop` within 120 s, with a concurrency for an answer (in
    the shapes whose loop was recorded: truths.json says which was not, and why)."""
    s = seen[shape]
    assert s.closed_after is not None and s.closed_after <= 120, s
    assert s.closed_concurrency is not None and s.closed_concurrency > 0


@pytest.fixture(scope="module")
def restarted() -> check.Observed:
    return check.observe(FIXTURES / "restart.jsonl.gz", RESTART["tpot_objective_s"],
                         check.marks(RESTART["marks"]))  # fmt: skip


def test_a_restart_into_another_cap_says_config_changed_within_a_window(
    restarted: check.Observed,
) -> None:
    """vLLM restarted from --max-num-seqs 32 to 8, the exporter told at once: the fit starts
    again within a window (2 s): the old configuration's answer is not given past it."""
    assert restarted.config_changed_after is not None, restarted
    assert restarted.config_changed_after <= 2.0


@pytest.mark.xfail(reason=MISSES[("restart_answer", "restart")], strict=True)
def test_a_restart_into_another_cap_answers_anew(restarted: check.Observed) -> None:
    """At ~60% of the truth at the new cap: within ±15% of it."""
    assert check.within(restarted.main, RESTART["truth"], 0.15), restarted.main
