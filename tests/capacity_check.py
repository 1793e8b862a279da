"""Capacity's answer on a recorded observation, checked against the truth found by vLLM's own
benchmark client (bench/capacity.py makes both; docs/capacity.md has the pass criteria).

A recording holds one fresh server's observation in phases; ``Marks`` are their wall-clock
times. The recording is replayed once through the pipeline exactly as ``serve`` computes, and
capacity is read where each check needs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.app import load_catalog, make_pipeline, roofline_settings
from exporter.config import load_config
from exporter.derive.capacity import Capacity
from exporter.scrape.replay import replay_ticks

MAX_NUM_SEQS = 32
TTFT_OBJECTIVE = 2.0  # seconds, p99
HORIZON = "60s"


@dataclass(frozen=True)
class Marks:
    """Wall-clock times (the recording's own clock) of the observation's phases: the ends of
    the plateau at ~30% and at ~60% of the truth, the overload (1.3x the truth) and the
    fixed-concurrency client; a restart: when the server stopped, and the --max-num-seqs it
    came back with (the exporter told it at once, as an operator's reload does). A phase not
    observed is None."""

    low_end: float | None = None
    main_end: float | None = None
    overload: tuple[float, float] | None = None
    closed: tuple[float, float] | None = None
    restart: tuple[float, float] | None = None


@dataclass
class Observed:
    """What the exporter said at each mark."""

    low: Capacity | None = None
    main: Capacity | None = None
    overloaded_after: float | None = None  # seconds into the overload until `overloaded`
    headroom_positive_in_overload: bool = False
    closed_after: float | None = None  # seconds into the closed loop until `closed_loop`
    closed_concurrency: float | None = None
    config_changed_after: float | None = None  # seconds after the restart until `config_changed`
    reasons: list[str] = field(default_factory=list)


def settings(tpot_objective: float, max_num_seqs: float = MAX_NUM_SEQS) -> Any:
    flags = {"max_num_seqs": f"{max_num_seqs:g}", "slo_tpot": f"{tpot_objective * 1e3:.1f}ms",
             "slo_ttft": f"{TTFT_OBJECTIVE:g}s", "horizon": HORIZON}  # fmt: skip
    return load_config(flags, {}, {})


def observe(recording: Path, tpot_objective: float, marks: Marks) -> Observed:
    """Replay ``recording`` and read capacity at ``marks``."""
    pipeline = make_pipeline(settings(tpot_objective))
    seen = Observed()
    restarted = False
    for tick in replay_ticks(recording, None):
        at = tick.engine.observed_at if tick.engine is not None else None
        if at is None:
            pipeline.add_tick(tick)
            continue
        if marks.restart is not None and not restarted and at >= marks.restart[0]:
            # The exporter's reload with the new cap (what ``serve`` does on SIGHUP).
            cfg = settings(tpot_objective, marks.restart[1])
            pipeline.reconfigure(roofline_settings(cfg, load_catalog(cfg)), marks.restart[1])
            restarted = True
        c = pipeline.snapshot.capacity
        if marks.low_end is not None and seen.low is None and at >= marks.low_end:
            seen.low = c
        if marks.main_end is not None and seen.main is None and at >= marks.main_end:
            seen.main = c
        if marks.overload is not None and marks.overload[0] <= at <= marks.overload[1]:
            if c.withheld == "overloaded" and seen.overloaded_after is None:
                seen.overloaded_after = at - marks.overload[0]
            # The horizon still holds the minute before: headroom may stay positive for it.
            said = seen.overloaded_after is not None or at - marks.overload[0] > 60
            if said and c.headroom is not None and c.headroom > 0:
                seen.headroom_positive_in_overload = True
        if marks.closed is not None and marks.closed[0] <= at <= marks.closed[1]:
            if c.withheld == "closed_loop" and seen.closed_after is None:
                seen.closed_after = at - marks.closed[0]
                seen.closed_concurrency = c.concurrency
        pipeline.add_tick(tick)
        if restarted and seen.config_changed_after is None:
            # What the tick that follows the restart (and each after it) made of capacity.
            assert marks.restart is not None
            if pipeline.snapshot.capacity.withheld == "config_changed":
                seen.config_changed_after = at - marks.restart[0]
    return seen


def within(c: Capacity | None, truth: float, tolerance: float) -> bool | None:
    """True/False: the answer within ``tolerance`` of the truth; None: withheld."""
    if c is None or c.requests_per_second is None:
        return None
    return math.isfinite(c.requests_per_second) and abs(c.requests_per_second / truth - 1) <= (
        tolerance
    )


def covers(c: Capacity | None, truth: float, missed_at: float | None = None) -> bool:
    """The interval meets the truth: the highest rate that met the objectives, or (with
    ``missed_at``, the lowest rate above it that missed) anywhere in between, where the
    bisection left the true capacity."""
    if c is None or c.lower is None or c.upper is None:
        return False
    return c.lower <= (missed_at or truth) and truth <= c.upper


def limit_matches(c: Capacity | None, truth_limit: str) -> bool:
    """The truth's first objective to fail above it was TPOT (``tpot``) or TTFT (``ttft``);
    requests waiting for a slot show in TTFT, so the cap and the KV cache match it too."""
    if c is None or c.limit is None:
        return False
    return c.limit == "tpot" if truth_limit == "tpot" else c.limit != "tpot"


def marks(saved: dict[str, Any]) -> Marks:
    """Marks from their JSON (pairs saved as lists)."""
    return Marks(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
