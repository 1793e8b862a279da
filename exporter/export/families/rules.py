"""Rules, issues and direction."""

from __future__ import annotations

from collections.abc import Callable

from exporter.derive import thresholds as T
from exporter.derive.diagnosis import FIXES
from exporter.derive.rules import SKIP_REASONS
from exporter.export.families.base import (
    ENGINE,
    Family,
    Rows,
    View,
    _one,
    _rules,
)


def _skipped(v: View) -> Rows:
    d = v.snap.diagnosis
    if d is None:
        return []
    return [
        ((s.rule, s.name, s.latest.skipped), 1.0)
        for s in d.rules
        if s.latest is not None and s.latest.skipped is not None
    ]


def _issues(v: View) -> Rows:
    d = v.snap.diagnosis
    if d is None:
        return []
    return [((g.group, g.primary.rule, g.primary.name, g.primary.fix_code), 1.0) for g in d.groups]


def _direction(v: View) -> Rows:
    d = v.snap.direction
    if d is None:
        return []
    return [((x,), 1.0 if d.direction == x else 0.0) for x in ("better", "worse", "plateau")]


def _delta(get: Callable[[View], float | None]) -> Callable[[View], Rows]:
    """A direction figure in percent (or pp) as a ratio."""

    def rows(v: View) -> Rows:
        x = get(v)
        return [((), None if x is None else x / 100.0)]

    return rows


SIGNIFICANT = (
    f"1 when the rule passed the persistence gate over the last {{H}}: fired in >= "
    f"{T.PERSIST_MIN_WINDOWS} windows and >= {T.PERSIST_MIN_SHARE:.0%} of evaluable windows "
    f"(R2: any window with preemptions, or KV >= {T.R2_KV_CRITICAL_AT_LEAST:.0%} in "
    f"{T.R2_CRITICAL_WINDOWS} windows; R4: whenever it holds)."
)


FAMILIES: tuple[Family[View], ...] = (
    Family("rule_firing", "gauge",
           "1 if the rule fired in the latest evaluable window (~2 s), else 0.",
           ("rule", "name", "variant"),
           _rules(lambda s: 1.0 if s.latest and s.latest.fired else 0.0, evaluated_only=True),
           needs=ENGINE),
    Family("rule_fired_windows", "gauge",
           "Evaluable windows of the last {H} in which the rule fired (R4: 1 while it holds).",
           ("rule", "name", "variant"), _rules(lambda s: float(s.fired_windows)), needs=ENGINE),
    Family("rule_score_ratio", "gauge",
           "Fraction of the evaluable windows of the last {H} in which the rule fired (R4: 1).",
           ("rule", "name", "variant"), _rules(lambda s: s.score), needs=ENGINE),
    Family("rule_significant", "gauge", SIGNIFICANT, ("rule", "name", "variant"),
           _rules(lambda s: 1.0 if s.significant else 0.0), needs=ENGINE),
    Family("rule_skipped", "gauge",
           "1 while the rule cannot be evaluated in the latest evaluable window; reason: "
           + ", ".join(SKIP_REASONS) + ".", ("rule", "name", "reason"), _skipped, needs=ENGINE),
    Family("issue_info", "gauge",
           "1 per significant issue group (memory, scheduling, cache_reuse): its primary rule "
           "and the fix as a code (" + ", ".join(FIXES) + "). The numbers behind it: "
           "vllm_profile_rule_score_ratio and the series it cites.",
           ("group", "rule", "name", "fix"), _issues, needs=ENGINE),
    Family("config_epoch", "gauge",
           "Configuration epochs seen: +1 on each vLLM restart, cache_config_info change or "
           "exporter reconfiguration.", (), _one(lambda v: float(v.snap.epoch))),
    Family("config_epoch_info", "gauge",
           "1 for what started the current configuration epoch: engine_restart (into another "
           "configuration), engine_restart_same_config (a restart that kept its configuration: "
           "not a configuration change), cache_config_change or reconfigured; absent before "
           "the first.", ("cause",),
           lambda v: [((v.snap.epoch_cause,), 1.0)] if v.snap.epoch_cause else []),
    Family("direction", "gauge",
           "One-hot verdict of the last before/after comparison (a full horizon on each side of "
           "the latest configuration change): better, worse or plateau.", ("direction",),
           _direction),
    Family("efficiency_delta_ratio", "gauge",
           "Change of efficiency per running request (after - before) at the last comparison; "
           "0.02 = +2 percentage points.", (),
           _delta(lambda v: v.snap.direction.efficiency_delta_pp if v.snap.direction else None)),
    Family("throughput_delta_ratio", "gauge",
           "Relative change of generated tokens/s at the last comparison (0.1 = +10%).", (),
           _delta(lambda v: v.snap.direction.throughput_delta_pct if v.snap.direction else None)),
    Family("ttft_p99_delta_ratio", "gauge",
           f"Relative change of TTFT p99 at the last comparison (0.2 = +20%; above "
           f"+{T.LATENCY_VETO_TTFT_P99_PCT:g}% it vetoes better).", (),
           _delta(lambda v: v.snap.direction.ttft_p99_delta_pct if v.snap.direction else None)),
)  # fmt: skip
