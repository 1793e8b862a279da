"""Token matching of NVML device names and vLLM model names against the catalog.

Names are lower-cased and split on every non-alphanumeric character, so size tokens survive
whole (``70b``, ``8x7b``, ``a3b``) and versions split (``Qwen2.5`` → ``qwen2``, ``5``). An entry
matches when every required token of one of its patterns is present and no excluded one is; the
match with the most required tokens wins, and a tie between two entries matches nothing —
an ambiguous name gets no roofline rather than a guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TypeVar

from exporter.catalog.schema import GpuSpec, ModelSpec, Pattern

_SPLIT = re.compile(r"[^a-z0-9]+")
T = TypeVar("T", GpuSpec, ModelSpec)


def tokens(name: str) -> frozenset[str]:
    """
    >>> sorted(tokens("meta-llama/Llama-3.1-70B-Instruct"))
    ['1', '3', '70b', 'instruct', 'llama', 'meta']
    """
    return frozenset(t for t in _SPLIT.split(name.lower()) if t)


def _score(patterns: Iterable[Pattern], toks: frozenset[str]) -> int:
    best = 0
    for p in patterns:
        if p.present <= toks and not (p.absent & toks):
            best = max(best, len(p.present))
    return best


def best_match(name: str, entries: Mapping[str, T]) -> T | None:
    """The most specific entry matching ``name``; None when nothing or more than one ties."""
    toks = tokens(name)
    scored = [(s, e) for e in entries.values() if (s := _score(e.match, toks)) > 0]
    if not scored:
        return None
    top = max(s for s, _ in scored)
    winners = [e for s, e in scored if s == top]
    return winners[0] if len(winners) == 1 else None
