"""Pieces of the Prometheus text format (0.0.4) shared by the vLLM and dcgm-exporter parsers."""

from __future__ import annotations

import re

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
        if "\\" in value:
            value = _UNESCAPE.sub(lambda e: "\n" if e.group(1) == "n" else e.group(1), value)
        labels[m.group(1)] = value
        pos = m.end()
    return labels


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
