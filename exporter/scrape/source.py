"""The one contract between sources and the engine: what a source is, and what a poll returns.

Two roles. An inference engine's metrics are read by one :class:`EngineFetcher
<exporter.scrape.engine_fetch.EngineFetcher>` per server, which knows the engine only through its
:class:`Engine` record (how a body is read, why it is refused); ``exporter/engines/`` holds one
package per engine kind and the map of them. GPU readers are classes of their own, one per kind
(:data:`GPU_KINDS`), built by ``app.GPU_SOURCES``. The loop polls every source in its own thread,
at the cadence the pipeline's plan asks for; a source never raises for anything its target does —
it returns a :class:`~exporter.samples.PollError` with a short stable reason (the metric label).
Sources and the core share only the typed samples of :mod:`exporter.samples`.

Adding a GPU reader: a class with the role's ``poll`` and ``close`` in ``scrape/``, returning a
:class:`~exporter.samples.GpuSample` (HTTP targets use
:class:`~exporter.scrape.http_get.HttpGetter` for deadlines and caps, and map every failure to a
:class:`FetchError` reason); its kind and error reasons here, its builder in
``app.GPU_SOURCES``. Adding an engine: docs/sources.md#adding-an-engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from exporter.samples import EngineSample, GpuSample, ModelsInfo, PollError
from exporter.scrape.http_get import FetchError
from exporter.scrape.text_format import BOUND_REASONS

__all__ = [
    "ENGINE_REASONS", "GPU_KINDS", "GPU_REASONS", "Engine", "EnginePoll", "EngineSource",
    "FetchError", "GpuSource",
]  # fmt: skip

GPU_KINDS = ("nvml", "dcgm", "none")  # the role's health label is its kind

# Every reason a poll of each kind can fail with (the ``reason`` label of poll_errors_total):
# each series is exported at 0 from the first poll, so rate() and increase() see the first
# failure. A new reason is added here with the code that returns it.
_LOOP = ("timeout", "internal")  # the loop's own: no answer by the deadline, the poll raised
_HTTP = ("connection", "http_status", "redirect", "tls", "bad_content_type", "body_too_large",
         "malformed", "non_finite")  # fmt: skip
# Every engine's polls: the loop's, HTTP's, the body's bounds, and the pipeline's refusal of
# answers from several processes behind one URL; an engine adds its parser's own.
ENGINE_REASONS = _LOOP + _HTTP + BOUND_REASONS + ("several_servers",)
GPU_REASONS: dict[str, tuple[str, ...]] = {
    "nvml": _LOOP + ("unavailable", "no_gpu_answered"),
    "dcgm": _LOOP + _HTTP + BOUND_REASONS + ("no_gpu_selected",),
}


@dataclass(frozen=True, slots=True)
class Engine:
    """One kind of inference engine, as the exporter reads it: everything that differs from one
    engine to another. Its ``kind`` is the ``--engine`` value, the health label
    (``vllm_profile_up{source}``) and the source name its polls carry in recordings.

    The parsers are pure (text and the poll's time in, a sample out) and raise
    :class:`~exporter.scrape.text_format.ParseError` with one of ``body_reasons`` (or a bound's
    reason) for a body they refuse. ``parse_poll`` reads only what every poll needs (running,
    waiting, KV usage, preemptions, generated tokens, the start time, model names and engines),
    for polls inside a window; ``parse_metrics`` reads everything."""

    kind: str
    name: str  # as a person writes it, in messages: "vLLM"
    parse_metrics: Callable[[str, float], EngineSample]
    parse_poll: Callable[[str, float], EngineSample]
    parse_models: Callable[[str, float], ModelsInfo | None]  # the models endpoint's answer
    body_reasons: tuple[str, ...]  # why its parsers refuse a body
    reads: tuple[str, ...]  # the metric families it reads, for the docs and a reader
    metrics_path: str = "/metrics"
    models_path: str = "/v1/models"  # the OpenAI-compatible list of served models

    @property
    def error_reasons(self) -> tuple[str, ...]:
        """Every reason one of its polls can fail with."""
        return ENGINE_REASONS + tuple(r for r in self.body_reasons if r not in ENGINE_REASONS)


@dataclass(frozen=True, slots=True)
class EnginePoll:
    """One poll of an inference engine: the sample or why not, and the raw texts read, which
    the recorder writes from the tick (the engine never keeps them)."""

    result: EngineSample | PollError
    body: str | None = None  # the metrics text exactly as received
    models: ModelsInfo | None = None
    models_body: str | None = None


class EngineSource(Protocol):
    """The inference engine's metrics (its ``/metrics``, or a replay of them)."""

    def poll(self, want_models: bool, complete: bool) -> EnginePoll:
        """Read the metrics; with ``want_models``, the served models too (at start and after a
        restart). Without ``complete`` (a poll inside a window), only what every poll needs
        may be decoded: the sample says so (``EngineSample.complete``)."""
        ...

    def close(self) -> None: ...


class GpuSource(Protocol):
    """The server's GPUs (NVML, dcgm-exporter, a replay)."""

    def poll(self, edge: bool) -> GpuSample | PollError:
        """Read all GPUs; ``edge`` marks a window boundary, where slow reads are allowed."""
        ...

    def close(self) -> None: ...
