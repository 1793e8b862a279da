"""Pieces of the Prometheus text format (0.0.4) shared by the engines' and dcgm's parsers."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import pairwise

from exporter.samples import Histogram

# Bounds on what a target's body may hold, checked as each line is read (the body itself is
# capped while it streams, scrape/http_get.py). Real bodies are far inside them: vLLM's longest
# line is its cache_config_info (~1.5 KB), a model name or path well under 512 characters, a
# histogram ~20 buckets (0.33's custom buckets: tens), a body a few thousand series.
MAX_LINE = 64 * 1024  # characters in one line of a family that is read
MAX_LABEL_VALUE = 512  # characters in one label value (also what may be exported as a label)
MAX_SERIES = 20_000  # lines of the families read, in one body
MAX_BUCKETS = 1_024  # buckets in one histogram series
# The reasons a body over those bounds is refused (each a poll_errors_total reason).
BOUND_REASONS = ("line_too_long", "label_too_long", "too_many_series")

_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_UNESCAPE = re.compile(r"\\(.)")


class ParseError(ValueError):
    """The body is not usable; ``reason`` is a short label for the error metric."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_labels(text: str, line: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    end = len(text.rstrip())
    while pos < end:
        m = _LABEL.match(text, pos)
        if m is None:
            raise ParseError("malformed", f"bad label set in line {line[:120]!r}")
        value = m.group(2)
        if len(value) > MAX_LABEL_VALUE:
            raise ParseError(
                "label_too_long",
                f"label {m.group(1)} of {len(value)} characters (at most {MAX_LABEL_VALUE})",
            )
        if "\\" in value:
            value = _UNESCAPE.sub(lambda e: "\n" if e.group(1) == "n" else e.group(1), value)
        labels[m.group(1)] = value
        pos = m.end()
    return labels


def check_line(line: str) -> None:
    """Refuse a line over :data:`MAX_LINE` before anything parses it."""
    if len(line) > MAX_LINE:
        raise ParseError("line_too_long", f"a line of {len(line)} characters begins {line[:80]!r}")


def parse_value(text: str, line: str) -> float:
    try:
        return float(text)  # the usual case: a value alone (float() ignores the spaces around)
    except ValueError:
        pass
    parts = text.split()
    if not parts or len(parts) > 2:
        raise ParseError("malformed", f"no value in line {line[:120]!r}")
    try:
        return float(parts[0])
    except ValueError:
        raise ParseError("malformed", f"bad value in line {line[:120]!r}") from None


def split_line(line: str) -> tuple[str, str, str]:
    """``name{labels} value`` → (name, labels text, rest)."""
    brace = line.find("{")
    space = line.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        close = line.rfind("}")
        if close < brace:
            raise ParseError("malformed", f"unclosed label set in line {line[:120]!r}")
        return line[:brace], line[brace + 1 : close], line[close + 1 :]
    if space == -1:
        raise ParseError("malformed", f"no value in line {line[:120]!r}")
    return line[:space], "", line[space:]


@dataclass(slots=True)
class HistSeries:
    """One histogram series as its lines are read: buckets by ``le``, its sum and count."""

    buckets: dict[float, float]
    sum: float | None = None
    count: float | None = None


def merge_histogram(
    family: str, series: dict[tuple[tuple[str, str], ...], HistSeries]
) -> Histogram:
    """One family's series (one per engine, or per label set) summed into one histogram: each
    complete, with a +Inf bucket and counts that never decrease, all on the same bounds."""
    bounds: tuple[float, ...] | None = None
    cumulative: list[float] = []
    total_sum = 0.0
    total_count = 0.0
    for s in series.values():
        if not s.buckets or s.sum is None or s.count is None:
            raise ParseError("bad_histogram", f"{family}: incomplete series")
        these = tuple(sorted(s.buckets))
        if these[-1] != math.inf:
            raise ParseError("bad_histogram", f"{family}: no +Inf bucket")
        counts = [s.buckets[b] for b in these]
        if any(b < a for a, b in pairwise(counts)):
            raise ParseError("bad_histogram", f"{family}: bucket counts decrease with le")
        if bounds is None:
            bounds, cumulative = these, counts
        elif these != bounds:
            raise ParseError("bad_histogram", f"{family}: series disagree on bucket bounds")
        else:
            cumulative = [a + b for a, b in zip(cumulative, counts, strict=True)]
        total_sum += s.sum
        total_count += s.count
    assert bounds is not None
    return Histogram(bounds, tuple(cumulative), total_sum, total_count)


# Finding a family by name, for the per-poll reads that need a few families of a body.


def _find_family(body: str, name: str, start: int, stop: int) -> int:
    """Where the first sample line of family ``name`` starts in ``body[start:stop]``, or -1."""
    at = start - 1
    while (at := body.find(name, at + 1, stop)) != -1:
        end = at + len(name)
        if (at == 0 or body[at - 1] == "\n") and body[end : end + 1] in ("{", " "):
            return at
    return -1


def family_lines(body: str, name: str, start: int) -> tuple[list[str], int] | None:
    """The sample lines of family ``name`` (a family's lines are consecutive in the text
    format) and where they end: searched from ``start`` on, then before it."""
    at = _find_family(body, name, start, len(body))
    if at == -1 and start > 0:
        at = _find_family(body, name, 0, start + len(name))
    if at == -1:
        return None
    lines = []
    end = len(name)
    while body.startswith(name, at) and body[at + end : at + end + 1] in ("{", " "):
        nl = body.find("\n", at)
        lines.append(body[at:nl])  # the body ends with a newline: checked first
        at = nl + 1
    return lines, at
