"""Small builders for constructed samples, so tests state only what they are about."""

from __future__ import annotations

import math
from typing import Any

from exporter.samples import EngineSample, GpuReading, GpuSample, Histogram, Tick

INF = math.inf
# What NVML says of the real GPUs probed (tests/fixtures/nvml): their names and memory.
H100_NAME = "NVIDIA H100 80GB HBM3"
H100_MEMORY = 85_520_809_984.0  # bytes
H200_NAME = "NVIDIA H200"


def hist(bounds: tuple[float, ...], cumulative: tuple[float, ...], total: float) -> Histogram:
    """A histogram whose count is the +Inf bucket."""
    return Histogram(bounds, cumulative, total, cumulative[-1])


def vllm(t: float, **fields: Any) -> EngineSample:
    fields.setdefault("running", 1.0)
    return EngineSample(observed_at=t, **fields)


def gpu(t: float, *readings: dict[str, Any]) -> GpuSample:
    return GpuSample(
        t,
        tuple(GpuReading(index=i, uuid=f"GPU-{i}", **r) for i, r in enumerate(readings)),
    )


def tick(v: EngineSample | None = None, g: GpuSample | None = None) -> Tick:
    return Tick(engine=v, gpu=g)


def cli_in_process(*args: str) -> str:
    """``vllm-profile-exporter ARGS`` run in this process (so coverage and mutation testing see
    the code it runs); its standard output."""
    import contextlib
    import io

    from exporter.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(args)) == 0
    return out.getvalue()
