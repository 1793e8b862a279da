"""Capacity: the request rate the server can take before its first limit, or why not known."""

from __future__ import annotations

from collections.abc import Callable

from exporter.derive import capacity as C
from exporter.derive.capacity import Capacity
from exporter.export.families.base import ENGINE, Family, Rows, View


def _cap(get: Callable[[Capacity], float | None]) -> Callable[[View], Rows]:
    return lambda v: [((), get(v.snap.capacity))]


def _bound(limit: str) -> Callable[[View], Rows]:
    return lambda v: [((), v.snap.capacity.bounds.get(limit))]


def _limit(v: View) -> Rows:
    c = v.snap.capacity
    return [((x,), 1.0 if x == c.limit else 0.0) for x in C.LIMITS if x in c.bounds]


def _unavailable(v: View) -> Rows:
    c = v.snap.capacity
    return [] if c.withheld is None else [((c.withheld,), 1.0)]


FAMILIES: tuple[Family[View], ...] = (
    Family("capacity_requests_per_second", "gauge",
           "Requests per second the server can take before its first limit (the smallest of the "
           "capacity_*_requests_per_second bounds), from a fit of engine step time against "
           "batch and the traffic of the last {H}; absent with capacity_unavailable.", (),
           _cap(lambda c: c.requests_per_second), needs=ENGINE),
    Family("capacity_lower_requests_per_second", "gauge",
           "Lower end of the 90% interval of capacity (a block jackknife over the fit's "
           "windows).", (), _cap(lambda c: c.lower), needs=ENGINE),
    Family("capacity_upper_requests_per_second", "gauge",
           "Upper end of the 90% interval of capacity.", (), _cap(lambda c: c.upper),
           needs=ENGINE),
    Family("capacity_headroom_requests_per_second", "gauge",
           "Capacity minus the requests finished per second over the last {H}.", (),
           _cap(lambda c: c.headroom), needs=ENGINE),
    Family("capacity_load_requests_per_second", "gauge",
           "Requests finished per second over the last {H}, the load capacity is compared with "
           "(exported while capacity is withheld too: what a fleet plans for).", (),
           _cap(lambda c: c.load), needs=ENGINE),
    Family("capacity_concurrency_target", "gauge",
           "Running requests at capacity: a measured target for an autoscaler that scales on "
           "running requests (also given when capacity is withheld as closed_loop: the answer "
           "in concurrency).", (), _cap(lambda c: c.concurrency), needs=ENGINE),
    Family("capacity_tpot_requests_per_second", "gauge",
           "Requests per second at which TPOT p99 reaches --slo-tpot (the fit's mean step "
           "time plus the spread of the batch a request lives beside, for the measured "
           "arrivals).", (), _bound("tpot"), needs=ENGINE),
    Family("capacity_ttft_requests_per_second", "gauge",
           "Requests per second at which TTFT p99 reaches --slo-ttft (today's TTFT p99 "
           "stretched with the step time, plus the wait for a slot of --max-num-seqs or the KV "
           "cache: Erlang C, scaled for bursty arrivals).", (), _bound("ttft"), needs=ENGINE),
    Family("capacity_max_num_seqs_requests_per_second", "gauge",
           "Requests per second at which the running requests reach --max-num-seqs x engines.",
           (), _bound("max_num_seqs"), needs=ENGINE),
    Family("capacity_kv_cache_requests_per_second", "gauge",
           "Requests per second at which the KV cache is full, at the last {H}'s KV per running "
           "request.", (), _bound("kv_cache"), needs=ENGINE),
    Family("capacity_arrival_dispersion_ratio", "gauge",
           "The arrivals' index of dispersion over the last {H}'s windows (variance / mean of "
           "requests admitted per window): 1 for Poisson arrivals, more for bursts or a load "
           "that moved.", (), _cap(lambda c: c.dispersion), needs=ENGINE),
    Family("capacity_limit", "gauge",
           "One-hot: the limit capacity stops at (tpot, ttft, max_num_seqs or kv_cache).",
           ("limit",),
           _limit, needs=ENGINE),
    Family("capacity_unavailable", "gauge",
           "1 with the reason capacity is withheld (docs/capacity.md lists them).", ("reason",),
           _unavailable, needs=ENGINE),
    Family("capacity_model_error_ratio", "gauge",
           "Self-check: the fit's mean TPOT over the last {H} (each window's requests at the "
           "fit's step time for that window's batch) over the measured mean TPOT, minus 1.", (),
           _cap(lambda c: c.model_error), needs=ENGINE),
    Family("capacity_fit_windows", "gauge",
           "Active windows the step-time fit stands on (this configuration epoch; at most 16 "
           "per quarter octave of batch).", (), _cap(lambda c: float(c.points)),
           needs=ENGINE),
    Family("capacity_fit_batch_max", "gauge",
           "The highest decode batch (generated tokens per engine step) among the fit's windows.",
           (), _cap(lambda c: c.batch_high), needs=ENGINE),
)  # fmt: skip
