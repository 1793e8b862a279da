"""Every inference engine the exporter reads, in one map: the kind (``--engine``) → its
:class:`~exporter.scrape.source.Engine` record. An engine is a package here that builds that
record; fetching, the loop, the pipeline, recordings, replay and the export all work from it, so
a new engine is its package and one line below (docs/sources.md#adding-an-engine).
"""

from __future__ import annotations

from exporter.engines import sglang, vllm
from exporter.scrape.source import GPU_REASONS, Engine

ENGINES: dict[str, Engine] = {
    "vllm": vllm.ENGINE,
    "sglang": sglang.ENGINE,
}

MODELS_SUFFIX = "_models"  # a recording's entries of an engine's models endpoint: "vllm_models"


def engine(kind: str) -> Engine:
    """The engine of that kind; ValueError names the kinds there are."""
    try:
        return ENGINES[kind]
    except KeyError:
        raise ValueError(f"unknown engine {kind!r} (one of: {', '.join(ENGINES)})") from None


def error_reasons() -> dict[str, tuple[str, ...]]:
    """Every source's poll failure reasons by its health label (engines and GPU readers)."""
    return {kind: e.error_reasons for kind, e in ENGINES.items()} | GPU_REASONS


def recorded_engine(source: str) -> Engine | None:
    """The engine a recording entry's ``source`` belongs to (its metrics or its models), if any."""
    kind = source.removesuffix(MODELS_SUFFIX)
    return ENGINES.get(kind)
