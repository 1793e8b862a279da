"""The two-tier window gate (docs/design.md), called once per window and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.derive.thresholds import ACTIVE_GPU_UTIL_PCT, ACTIVE_KV_PCT
from exporter.derive.window import Window


@dataclass(frozen=True, slots=True)
class Gate:
    evaluable: bool
    active: bool


def classify(w: Window) -> Gate:
    """Tier 1 (evaluable): a positive duration and a running count (0 is data; absent is not).

    Tier 2 (active): ``running > 0`` and at least one present activity arm fires — KV above 30%,
    or GPU utilization above 20%. Without GPU data the GPU arm is replaced by the evidence it stands
    for, tokens moved in the window; with no arm present at all, ``running > 0`` alone decides.
    """
    evaluable = w.duration is not None and w.duration > 0 and w.running is not None
    if not evaluable or w.running is None or w.running <= 0:
        return Gate(evaluable, False)
    arms: list[bool] = []
    if w.kv_usage is not None:
        arms.append(w.kv_usage * 100.0 > ACTIVE_KV_PCT)
    util = w.gpu_util_pct
    if util is not None:
        arms.append(util > ACTIVE_GPU_UTIL_PCT)
    elif w.d_generation_tokens is not None or w.d_prompt_tokens is not None:
        arms.append((w.d_generation_tokens or 0.0) + (w.d_prompt_tokens or 0.0) > 0)
    return Gate(True, any(arms) if arms else True)
