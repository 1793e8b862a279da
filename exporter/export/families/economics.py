"""Energy and money: the active basis (busy time) and the wall-clock basis."""

from __future__ import annotations

from exporter.export.families.base import (
    ENGINE,
    Family,
    Rows,
    View,
    _estimate,
    _one,
    _priced,
)


def _dollars(v: View) -> Rows:
    dollars = dict(v.snap.ledger.dollars)
    a = v.snap.assessment
    if a is not None and a.price_source is not None:
        dollars.setdefault(a.price_source, 0.0)  # a known price starts its series at 0
    return [((source,), x) for source, x in sorted(dollars.items())]


FAMILIES: tuple[Family[View], ...] = (
    Family("gpu_power_total_watts", "gauge",
           "Power of all the server's GPUs, mean over the active windows of the last {H}.", (),
           _estimate(lambda a: a.power_watts), needs=ENGINE),
    Family("active_energy_per_token_joules", "gauge",
           "GPU energy per generated token over the active windows of the last {H}; from the "
           "GPUs' energy counters where they exist, else mean power / throughput.", (),
           _estimate(lambda a: a.economics.joules_per_token), needs=ENGINE),
    Family("cost_per_hour_dollars", "gauge",
           "Server cost per hour: --cost-per-hour (price_source=flag), or catalog price x GPUs.",
           ("price_source",), _priced(lambda a: a.economics.cost_per_hour), needs=ENGINE),
    Family("active_cost_per_million_tokens_dollars", "gauge",
           "Dollars per million generated tokens while serving: the cost per hour over the "
           "throughput of the active windows of the last {H} (the marginal cost of a token).",
           ("price_source",), _priced(lambda a: a.economics.cost_per_million_tokens), needs=ENGINE),
    Family("active_recoverable_cost_per_hour_dollars", "gauge",
           "Estimate: cost per hour x (1 - efficiency) while serving: what the unused ceiling "
           "costs during busy time.", ("price_source",),
           _priced(lambda a: a.economics.recoverable_per_hour), needs=ENGINE),
    Family("duty_cycle_ratio", "gauge",
           "Share of the observed time of the last {H} spent under load (active seconds / "
           "seconds in which vLLM answered).", (), _estimate(lambda a: a.economics.duty_cycle),
           needs=ENGINE),
    Family("wall_clock_cost_per_million_tokens_dollars", "gauge",
           "Dollars per million generated tokens counting every observed second, busy or idle, "
           "of the last {H}: what the tokens really cost.", ("price_source",),
           _priced(lambda a: a.economics.wall_cost_per_million_tokens), needs=ENGINE),
    Family("wall_clock_recoverable_cost_per_hour_dollars", "gauge",
           "Estimate: cost per hour x (1 - duty cycle x efficiency) over the last {H}: idle "
           "capacity counts as recoverable, and a fully idle server's whole cost is.",
           ("price_source",), _priced(lambda a: a.economics.wall_recoverable_per_hour),
           needs=ENGINE),
    Family("observed_seconds", "counter",
           "Seconds in which vLLM answered (evaluable windows) since the exporter started; "
           "survives vLLM restarts.", (), _one(lambda v: v.snap.ledger.observed_seconds)),
    Family("active_seconds", "counter",
           "Of those, seconds under load (active windows): increase(active) / increase(observed) "
           "is the duty cycle over any range.", (),
           _one(lambda v: v.snap.ledger.active_seconds)),
    Family("observed_generation_tokens", "counter",
           "Tokens generated in the observed seconds since the exporter started (summed over "
           "vLLM restarts).", (), _one(lambda v: v.snap.ledger.generation_tokens)),
    Family("observed_cost_dollars", "counter",
           "Cost accrued over the observed seconds (cost per hour x seconds / 3600): "
           "increase(this) / increase(observed_generation_tokens) is the wall-clock cost of a "
           "token over any range.", ("price_source",), _dollars),
    Family("observed_gpu_energy_joules", "counter",
           "Energy of all the server's GPUs over the observed seconds (energy counters where "
           "they exist, else mean power x time).", (),
           _one(lambda v: v.snap.ledger.energy_joules)),
    Family("observed_finished_requests", "counter",
           "Requests vLLM finished in the observed seconds since the exporter started, by how "
           "they ended (vLLM's finished_reason: stop, length, abort, error); summed over vLLM "
           "restarts: a service's error ratio is the sum over its pods.", ("finished_reason",),
           lambda v: sorted(((r,), n) for r, n in v.snap.ledger.finished.items())),
)  # fmt: skip
