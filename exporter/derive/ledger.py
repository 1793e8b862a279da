"""Wall-clock totals since the exporter started (docs/design.md): what Prometheus reconciles.

Each evaluable window adds its span to the seconds observed (and to the seconds active when it is
active), its generated tokens, the GPUs' energy and the dollars its span cost. The totals belong
to the exporter, not to vLLM: a vLLM restart does not reset them (windows never span two
processes, so every delta added is one process's); only an exporter restart does. Over any range,
``increase(dollars) / increase(tokens)`` is the true cost of a token and
``increase(active) / increase(observed)`` the duty cycle.

>>> from exporter.derive.window import Window
>>> w = Window(start=0.0, end=2.0, duration=2.0, engine_polls=9, gpu_polls=9, running=1.0,
...            d_generation_tokens=50.0)
>>> led = accrue(Ledger(), w, evaluable=True, active=True, cost_per_hour=3.6, price_source="flag")
>>> led.observed_seconds, led.active_seconds, led.generation_tokens, dict(led.dollars)
(2.0, 2.0, 50.0, {'flag': 0.002})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from exporter.derive.slo import SloCount
from exporter.derive.window import Window


@dataclass(frozen=True, slots=True)
class Ledger:
    """Counters since the exporter started; replaced (never mutated) as windows close."""

    observed_seconds: float = 0.0  # spans of evaluable windows
    active_seconds: float = 0.0  # spans of active windows
    generation_tokens: float = 0.0  # in evaluable windows
    energy_joules: float | None = None  # None until a window had energy or power for every GPU
    dollars: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    # Latency objectives: kind ("ttft", "tpot") → (requests meeting it, requests), from the
    # first window with the objective set
    slo: Mapping[str, tuple[float, float]] = field(default_factory=lambda: MappingProxyType({}))
    # Requests vLLM finished in the observed seconds, by its finished_reason (stop, length,
    # abort, error): what a service's error ratio is summed from across its pods
    finished: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


MAX_FINISHED_REASONS = 16  # vLLM has five; a target inventing more gets no more than this kept


def window_joules(w: Window) -> float | None:
    """All GPUs' energy over the window: each GPU's energy-counter delta, else its mean power ×
    the window's span; None when a GPU has neither (a partial sum would read low)."""
    if not w.gpus:
        return None
    span = w.end - w.start
    total = 0.0
    for g in w.gpus:
        if g.energy_joules is not None:
            total += g.energy_joules
        elif g.power_watts is not None and span > 0:
            total += g.power_watts * span
        else:
            return None
    return total


def accrue(
    ledger: Ledger,
    w: Window,
    *,
    evaluable: bool,
    active: bool,
    cost_per_hour: float | None,
    price_source: str | None,
    slo: Mapping[str, SloCount] | None = None,
) -> Ledger:
    """The ledger after one closed window. Only evaluable windows count: a window in which vLLM
    did not answer cannot say whether the server was busy, nor how many tokens it made."""
    span = w.duration
    if not evaluable or span is None or span <= 0:
        return ledger
    joules = window_joules(w)
    energy = ledger.energy_joules
    if joules is not None:
        energy = (energy or 0.0) + joules
    dollars = ledger.dollars
    if cost_per_hour is not None and price_source is not None:
        dollars = MappingProxyType(
            {**dollars, price_source: dollars.get(price_source, 0.0) + cost_per_hour * span / 3600}
        )
    counts = dict(ledger.slo)
    for kind, c in (slo or {}).items():
        good, total = counts.get(kind, (0.0, 0.0))
        counts[kind] = (good + c.good, total + c.total)
    finished = dict(ledger.finished)
    for reason, n in w.d_finished_by_reason.items():
        if reason in finished or len(finished) < MAX_FINISHED_REASONS:
            finished[reason] = finished.get(reason, 0.0) + n
    return Ledger(
        observed_seconds=ledger.observed_seconds + span,
        active_seconds=ledger.active_seconds + (span if active else 0.0),
        generation_tokens=ledger.generation_tokens + (w.d_generation_tokens or 0.0),
        energy_joules=energy,
        dollars=dollars,
        slo=MappingProxyType(counts),
        finished=MappingProxyType(finished),
    )
