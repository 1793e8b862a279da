"""Persistence, R4, issue groups and fixes: from per-window rule results to a diagnosis.

A rule that fired once is noise: a recommendation is significant only when the rule fired in at
least 3 evaluable windows and in at least 25% of the horizon's evaluable windows. R2's main path
has two exceptions (any window with preemptions; KV ≥ 95% in 2 windows); R4 is a configuration
fact and exempt. Rules are grouped by root cause, one primary per group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.derive import thresholds as T
from exporter.derive.assess import Assessment
from exporter.derive.horizon import Aggregate
from exporter.derive.rule_advice import FIXES, Horizon
from exporter.derive.rules import ALL_RULES, BY_KEY, RULES, RuleKey, RuleResult

__all__ = ["FIXES", "Diagnosis", "IssueGroup", "RuleStatus", "diagnose"]

# Issue groups and tie order come from the registry's order.
GROUPS: Mapping[str, tuple[RuleKey, ...]] = {
    g: tuple(r.key for r in RULES if r.group == g) for g in dict.fromkeys(r.group for r in RULES)
}
TIE_ORDER: tuple[RuleKey, ...] = tuple(r.key for r in RULES)


@dataclass(frozen=True, slots=True)
class RuleStatus:
    key: RuleKey
    name: str
    fired_windows: int
    evaluable_windows: int
    score: float  # fraction of evaluable windows fired (R4: 1.0 when firing)
    significant: bool
    latest: RuleResult | None  # the latest evaluable window's result
    fix: str = ""  # the action, in words (may quote a figure)
    evidence: str = ""  # the numbers that justify it
    fix_code: str = ""  # the action as a short fixed code (FIXES): exported, never churns

    @property
    def rule(self) -> str:
        return self.key[0]

    @property
    def variant(self) -> str:
        return self.key[1]


@dataclass(frozen=True, slots=True)
class IssueGroup:
    group: str
    primary: RuleStatus
    supporting: tuple[RuleStatus, ...]


@dataclass(frozen=True, slots=True)
class Diagnosis:
    rules: tuple[RuleStatus, ...]
    groups: tuple[IssueGroup, ...]  # significant groups, highest primary score first


def _significant(key: RuleKey, fired: Sequence[RuleResult], evaluable: int) -> bool:
    early = BY_KEY[key].early
    if early is not None and early(fired):
        return True
    n = len(fired)
    # n ≥ 3 fired windows are among the evaluable ones: evaluable ≥ 3 here.
    return n >= T.PERSIST_MIN_WINDOWS and n / evaluable >= T.PERSIST_MIN_SHARE


def diagnose(
    window_results: Sequence[Mapping[RuleKey, RuleResult]],
    agg: Aggregate,
    assessment: Assessment | None,
    max_num_seqs: float | None,
) -> Diagnosis:
    """``window_results``: the rule results of each evaluable window in the horizon, in order."""
    evaluable = len(window_results)
    statuses: list[RuleStatus] = []
    for key in ALL_RULES:
        rule = BY_KEY[key]
        latest: RuleResult | None
        if rule.fact is not None:
            latest = rule.fact(assessment)
            firing = latest.fired
            fired_n = 1 if firing else 0
            score, significant = (1.0 if firing else 0.0), firing
        else:
            results = [r[key] for r in window_results if key in r]
            fired = [r for r in results if r.fired]
            fired_n = len(fired)
            score = fired_n / evaluable if evaluable else 0.0
            significant = _significant(key, fired, evaluable)
            latest = results[-1] if results else None
        advice = rule.advice(Horizon(fired_n, evaluable, agg, assessment, max_num_seqs))
        statuses.append(
            RuleStatus(
                key,
                rule.name,
                fired_n,
                evaluable,
                score,
                significant,
                latest,
                advice.fix,
                advice.evidence,
                advice.fix_code,
            )  # fmt: skip
        )
    by_key = {s.key: s for s in statuses}
    groups = []
    for group, keys in GROUPS.items():
        members = sorted(
            (by_key[k] for k in keys if by_key[k].significant),
            key=lambda s: (-s.score, TIE_ORDER.index(s.key)),
        )
        if members:
            groups.append(IssueGroup(group, members[0], tuple(members[1:])))
    groups.sort(key=lambda g: (-g.primary.score, TIE_ORDER.index(g.primary.key)))
    return Diagnosis(tuple(statuses), tuple(groups))
