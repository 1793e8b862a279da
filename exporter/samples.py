"""Typed samples: the only thing sources (`scrape/`) and the core (`derive/`) share.

A source turns one poll into one of these immutable values; the core never sees HTTP, NVML or
recordings. Every field that the source could not read is ``None`` — absent, never zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

INF = math.inf


@dataclass(frozen=True, slots=True)
class Histogram:
    """A cumulative Prometheus histogram, summed over label sets (engines).

    ``bounds`` are the ``le`` values in ascending order, the last always ``+Inf``; ``cumulative``
    holds the bucket counts for those bounds (non-decreasing). Bounds are read from the body,
    never assumed.
    """

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    sum: float
    count: float

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


@dataclass(frozen=True, slots=True)
class ServingConfig:
    """What an engine states about its own configuration, typed as the figures need it (vLLM:
    its ``cache_config_info`` labels). Each field is None where the engine does not say."""

    # Every setting stated, values the engine measures at each start (block counts) left out:
    # part of the configuration's identity, compared across restarts and pods.
    settings: Mapping[str, str] = field(default_factory=dict)
    kv_capacity_tokens: float | None = None  # the KV pool, in tokens (measured at start)
    prefix_caching: bool | None = None  # automatic prefix caching on
    gpu_memory_utilization: float | None = None  # the share of GPU memory it may take
    cache_dtype: str | None = None  # the KV cache's dtype as stated ("auto", "fp8", ...)

    @property
    def stated(self) -> bool:
        """The engine said anything of its configuration."""
        return bool(self.settings) or self.kv_capacity_tokens is not None


@dataclass(frozen=True, slots=True)
class EngineSample:
    """One successful read of an engine's metrics, timestamped when the poll completed."""

    observed_at: float
    model_name: str | None = None  # None when the body names several models
    model_names: tuple[str, ...] = ()  # every model_name label value in the body
    running: float | None = None
    waiting: float | None = None
    # Of those waiting, the ones waiting for the scheduler's capacity (num_requests_waiting_by_
    # reason{reason="capacity"}, vLLM >= 0.20); None where the version does not say.
    waiting_capacity: float | None = None
    kv_usage: float | None = None  # 0-1, max over engines
    prefix_queries: float | None = None
    prefix_hits: float | None = None
    preemptions: float | None = None
    generation_tokens: float | None = None
    prompt_tokens: float | None = None
    requests_finished: float | None = None
    # the same counter by vLLM's finished_reason label (stop, length, abort, error, ...)
    finished_by_reason: Mapping[str, float] = field(default_factory=dict)
    ttft: Histogram | None = None
    tpot: Histogram | None = None
    prefill_time: Histogram | None = None
    queue_time: Histogram | None = None
    prompt_len: Histogram | None = None
    output_len: Histogram | None = None  # generated tokens per finished request
    # Engine steps taken (forward passes of the scheduler), a counter: the count of vLLM's
    # iteration_tokens_total, the sum of SGLang's cuda_graph_passes_total over its modes.
    steps: float | None = None
    # What those steps made, where the engine's token counters count only when a request ends
    # (SGLang): tokens generated, and prompt tokens computed (not taken from the prefix cache).
    # None where generation_tokens and prompt_tokens less prefix_hits count them as made (vLLM).
    step_generated: float | None = None
    step_prefilled: float | None = None
    est_flops: float | None = None
    est_read_bytes: float | None = None
    est_write_bytes: float | None = None
    process_start_time: float | None = None
    serving: ServingConfig = field(default_factory=ServingConfig)
    engines: int = 0
    # False: only the per-poll figures were read (running, waiting, KV, preemptions, generated
    # tokens, start time, names); a window starts and ends only at complete samples.
    complete: bool = True


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU at one poll. Units as NVML reports them after the obvious scaling (W, bytes)."""

    index: int
    uuid: str
    name: str | None = None
    util_gpu_pct: float | None = None
    util_mem_pct: float | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    mem_used_bytes: float | None = None
    mem_total_bytes: float | None = None
    temperature_c: float | None = None
    sm_clock_mhz: float | None = None
    energy_mj: float | None = None  # cumulative, read at window edges only
    dram_bw_util_pct: float | None = None  # GPM, over the last GPM interval


# What a GPU can physically report, per GpuReading field; a reading outside it (NVML's
# 0xFFFFFFFF for "not available", a NaN in a recording, a corrupt dcgm series) is not data.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "util_gpu_pct": (0.0, 100.0),
    "util_mem_pct": (0.0, 100.0),
    "power_watts": (0.0, 10_000.0),
    "power_limit_watts": (1.0, 10_000.0),
    "mem_used_bytes": (0.0, 2.0**44),  # 16 TiB
    "mem_total_bytes": (1.0, 2.0**44),
    "temperature_c": (0.0, 150.0),
    "sm_clock_mhz": (0.0, 10_000.0),
    "energy_mj": (0.0, 1e18),
    "dram_bw_util_pct": (0.0, 100.0),
}


_PLAUSIBLE_ITEMS = tuple(PLAUSIBLE.items())


def plausible(reading: GpuReading) -> GpuReading:
    """The reading with every value outside :data:`PLAUSIBLE` (or not finite) made absent.

    >>> r = plausible(GpuReading(0, "GPU-a", util_gpu_pct=4294967295.0, power_watts=300.0))
    >>> r.util_gpu_pct, r.power_watts
    (None, 300.0)
    """
    bad: dict[str, Any] = {}
    for name, (low, high) in _PLAUSIBLE_ITEMS:  # every poll, every GPU: no fields() walk
        v = getattr(reading, name)
        if v is not None and not low <= v <= high:  # NaN fails too
            bad[name] = None
    return replace(reading, **bad) if bad else reading


@dataclass(frozen=True, slots=True)
class GpuSample:
    """All selected GPUs at one poll."""

    observed_at: float
    gpus: tuple[GpuReading, ...]


@dataclass(frozen=True, slots=True)
class PollError:
    """A failed poll: the reason is a short stable token used as a metric label."""

    observed_at: float
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ModelsInfo:
    """What ``GET /v1/models`` says (read at start and after a restart)."""

    observed_at: float
    max_model_len: int | None
    model_ids: tuple[str, ...] = ()
    # (served name, root): the path or Hugging Face id each name serves, where vLLM says
    roots: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Tick:
    """The sources' results for one scheduled poll, plus how long each poll took. A source
    with nothing new this tick (not due, or its last poll still running) is None. The raw
    texts are for recordings only; the engine never keeps them."""

    engine: EngineSample | PollError | None
    gpu: GpuSample | PollError | None
    engine_duration: float | None = None
    gpu_duration: float | None = None
    models: ModelsInfo | None = None
    engine_body: str | None = None
    models_body: str | None = None
