"""The one contract between sources and the engine: what a source is, and what a poll returns.

Two roles, each with its kinds (:data:`ENGINE_KINDS`, :data:`GPU_KINDS`); ``app.ENGINE_SOURCES``
and ``app.GPU_SOURCES`` build each kind from the configuration. The loop polls every source in
its own thread, at the cadence the pipeline's plan asks for; a source never raises for anything
its target does — it returns a :class:`~exporter.samples.PollError` with a short stable reason
(the metric label). Sources and the core share only the typed samples of
:mod:`exporter.samples`.

Adding a GPU reader: a class with the role's ``poll`` and ``close`` in ``scrape/``, returning a
:class:`~exporter.samples.GpuSample` (HTTP targets use
:class:`~exporter.scrape.http_get.HttpGetter` for deadlines and caps, and map every failure to a
:class:`FetchError` reason); its kind and error reasons here, its builder in
``app.GPU_SOURCES``. An engine other than vLLM is not yet one place: the loop, the pipeline's
records and replay still name vLLM (docs/sources.md says what is left).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from exporter.samples import EngineSample, GpuSample, ModelsInfo, PollError
from exporter.scrape.http_get import FetchError
from exporter.scrape.text_format import BOUND_REASONS

__all__ = [
    "ENGINE_KINDS", "ERROR_REASONS", "GPU_KINDS", "EnginePoll", "EngineSource", "FetchError",
    "GpuSource",
]  # fmt: skip

ENGINE_KINDS = ("vllm",)  # the role's health label is its kind
GPU_KINDS = ("nvml", "dcgm", "none")

# Every reason a poll of each kind can fail with (the ``reason`` label of poll_errors_total):
# each series is exported at 0 from the first poll, so rate() and increase() see the first
# failure. A new reason is added here with the code that returns it.
_LOOP = ("timeout", "internal")  # the loop's own: no answer by the deadline, the poll raised
_HTTP = ("connection", "http_status", "redirect", "tls", "bad_content_type", "body_too_large",
         "malformed", "non_finite")  # fmt: skip
_VLLM_BODY = ("truncated", "negative", "duplicate_series", "bad_histogram", "no_vllm_metrics",
              "several_servers")  # fmt: skip
ERROR_REASONS: dict[str, tuple[str, ...]] = {
    "vllm": _LOOP + _HTTP + BOUND_REASONS + _VLLM_BODY,
    "nvml": _LOOP + ("unavailable", "no_gpu_answered"),
    "dcgm": _LOOP + _HTTP + BOUND_REASONS + ("no_gpu_selected",),
}


@dataclass(frozen=True, slots=True)
class EnginePoll:
    """One poll of an inference engine: the sample or why not, and the raw texts read, which
    the recorder writes from the tick (the engine never keeps them)."""

    result: EngineSample | PollError
    body: str | None = None  # the metrics text exactly as received
    models: ModelsInfo | None = None
    models_body: str | None = None


class EngineSource(Protocol):
    """The inference engine's metrics (vLLM's ``/metrics``, a replay of them)."""

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
