"""Figures written for people (``diagnose`` and the status page): the unit a reader expects and
enough digits that a small figure never reads as zero. An unknown figure is "n/a".

>>> tokens_per_second(1.16e9), tokens_per_second(477.05), duration(1.77e-7), percent(1.5e-6)
('1.16G tok/s', '477.1 tok/s', '0.18 µs', '0.00015%')
"""

from __future__ import annotations

from collections.abc import Mapping

# Where a price came from (the price_source label), in words.
PRICE_SOURCES: Mapping[str, str] = {
    "flag": "--cost-per-hour",
    "catalog_on_demand": "catalog on-demand, est",
    "catalog_spot": "catalog spot, est",
}


def si(v: float) -> str:
    """Three significant digits with a k/M/G/T suffix."""
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def tokens_per_second(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{si(v)} tok/s" if abs(v) >= 1e3 else f"{v:.1f} tok/s"


def duration(v: float | None) -> str:
    """Milliseconds, or microseconds below 0.1 ms (roofline floors are that small)."""
    if v is None:
        return "n/a"
    return f"{v * 1e3:,.1f} ms" if abs(v) >= 1e-4 or v == 0 else f"{v * 1e6:.2g} µs"


def percent(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.1%}" if v == 0 or abs(v) >= 0.001 else f"{v * 100:.2g}%"


def size(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v / 1e9:,.1f} GB" if abs(v) >= 1e8 else f"{v / 1e6:.3g} MB"


def dollars(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"${v:,.2f}" if v == 0 or abs(v) >= 0.01 else f"${v:.2g}"
