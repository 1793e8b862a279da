"""Latency objectives (``--slo-ttft``, ``--slo-tpot``): attainment, goodput, counts."""

from __future__ import annotations

from collections.abc import Callable

from exporter.export.families.base import (
    ENGINE,
    Family,
    Rows,
    View,
)


def _slo_target(kind: str) -> Callable[[View], Rows]:
    def rows(v: View) -> Rows:
        slo = v.snap.slo
        return [] if slo is None else [((), dict(slo.targets.items()).get(kind))]

    return rows


def _slo_attainment(kind: str) -> Callable[[View], Rows]:
    def rows(v: View) -> Rows:
        slo = v.snap.slo
        return [] if slo is None else [((), slo.attainment.get(kind))]

    return rows


def _slo_count(kind: str, good: bool) -> Callable[[View], Rows]:
    """From 0 once the objective is set, so the first bad request is an increase."""

    def rows(v: View) -> Rows:
        slo = v.snap.slo
        if slo is None or kind not in dict(slo.targets.items()):
            return []
        counts = v.snap.ledger.slo.get(kind, (0.0, 0.0))
        return [((), counts[0] if good else counts[1])]

    return rows


def _goodput(v: View) -> Rows:
    slo = v.snap.slo
    return [] if slo is None else [((), slo.goodput_tps)]


FAMILIES: tuple[Family[View], ...] = (
    Family("slo_ttft_target_seconds", "gauge", "The TTFT objective (--slo-ttft).", (),
           _slo_target("ttft")),
    Family("slo_tpot_target_seconds", "gauge", "The TPOT objective (--slo-tpot).", (),
           _slo_target("tpot")),
    Family("slo_ttft_attainment_ratio", "gauge",
           "Share of the requests finished in the evaluable windows of the last {H} whose time "
           "to first token met the objective (counted from vLLM's histogram buckets: exact at a "
           "bucket bound, else interpolated inside one bucket).", (),
           _slo_attainment("ttft"), needs=ENGINE),
    Family("slo_tpot_attainment_ratio", "gauge",
           "Share of the requests (tokens, where vLLM only has inter-token latency) of the "
           "evaluable windows of the last {H} whose time per output token met the objective.",
           (), _slo_attainment("tpot"), needs=ENGINE),
    Family("goodput_tokens_per_second", "gauge",
           "Generated tokens/s of requests meeting every objective set, approximated from above "
           "(tokens/s x the lowest attainment: the histograms do not say which requests missed "
           "both), over the last {H}.", (), _goodput, needs=ENGINE),
    Family("slo_ttft_requests", "counter",
           "Requests finished in the observed seconds since the exporter started, with a TTFT "
           "objective set: the denominator of burn-rate alerts.", (), _slo_count("ttft", False)),
    Family("slo_ttft_good_requests", "counter",
           "Of those, the requests whose time to first token met the objective.", (),
           _slo_count("ttft", True)),
    Family("slo_tpot_requests", "counter",
           "Requests (tokens, where vLLM only has inter-token latency) finished in the observed "
           "seconds with a TPOT objective set.", (), _slo_count("tpot", False)),
    Family("slo_tpot_good_requests", "counter",
           "Of those, the ones whose time per output token met the objective.", (),
           _slo_count("tpot", True)),
)  # fmt: skip
