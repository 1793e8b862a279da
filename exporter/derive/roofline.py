"""Roofline: the hardware ceiling for decode and what fraction of it the server uses
(docs/design.md).

Every output is a catalog-derived estimate. Inputs come in resolved (see ``resolve.py``); each
figure is None when an input it needs is missing, and ``reasons`` says why.

Worked example (H100 SXM, tensor peak, Llama 3 70B in bf16, TP 1): peak 989.4e12 FLOP/s and
3.35e12 B/s; ridge = 989.4e12 × 2 / (2 × 3.35e12) = 295.3 concurrent sequences; one stream can
do 3.35e12 / (70e9 × 2) = 23.9 tok/s; the hardware ceiling is 989.4e12 / (2 × 70e9) = 7,067 tok/s.

>>> r = compute(RooflineInputs(989.4e12, 3.35e12, 70e9, 70e9, 2.0, 1), batch=8, actual_tps=150.0)
>>> round(r.ridge_batch_size, 1), round(r.stream_tps, 2), round(r.hardware_tps)
(295.3, 23.93, 7067)
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.derive import roofline_reasons as R
from exporter.derive.roofline_reasons import ACTUAL_ABOVE_CEILING


@dataclass(frozen=True, slots=True)
class RooflineInputs:
    peak_flops: float | None  # FLOP/s per GPU (None: the catalog has no figure)
    peak_bw: float | None  # bytes/s per GPU
    roofline_params: float | None  # active params (MoE) else total
    weight_params: float | None  # total params else active
    bytes_per_param: float
    tp: int
    pp: int = 1  # pipeline stages per engine, each holding 1/pp of the layers on tp GPUs


@dataclass(frozen=True, slots=True)
class GpuMemory:
    index: int
    uuid: str
    total_bytes: float


@dataclass(frozen=True, slots=True)
class Roofline:
    weight_bytes: float | None = None
    ridge_batch_size: float | None = None
    stream_tps: float | None = None
    hardware_tps: float | None = None
    batch_tps: float | None = None
    efficiency: float | None = None  # ratio 0-1
    batch_efficiency: float | None = None
    headroom: float | None = None
    tpot_floor_seconds: float | None = None
    prefill_ceiling_tps: float | None = None
    prefill_floor_seconds: float | None = None
    kv_headroom_bytes: tuple[tuple[GpuMemory, float], ...] = ()
    reasons: tuple[str, ...] = ()


def compute(
    inp: RooflineInputs,
    *,
    batch: float | None,
    actual_tps: float | None,
    prompt_tokens_mean: float | None = None,
    gpus: tuple[GpuMemory, ...] = (),
    gpu_memory_utilization: float = 1.0,
    replicas: int = 1,
) -> Roofline:
    """All roofline figures that the inputs allow.

    ``batch`` is B, the time-weighted mean of running requests over active windows, summed over
    the server's data-parallel engines; ``actual_tps`` the generation tokens/s over the same
    windows, summed likewise. ``replicas`` is the number of those engines (vLLM
    ``--data-parallel-size``): each holds its own TP group of GPUs, so the server's ceilings are
    that many times one engine's, while one stream's speed, the ridge (a batch per engine) and
    the TPOT floor (at the batch one engine carries) are an engine's own.

    >>> inp = RooflineInputs(989.4e12, 3.35e12, 70e9, 70e9, 2.0, 1)
    >>> one, two = compute(inp, batch=8, actual_tps=150.0), compute(
    ...     inp, batch=16, actual_tps=300.0, replicas=2)
    >>> round(two.hardware_tps / one.hardware_tps), two.efficiency == one.efficiency
    (2, True)
    >>> two.tpot_floor_seconds == one.tpot_floor_seconds
    True
    """
    reasons: list[str] = []
    rp, tp, pp, bpp = inp.roofline_params, inp.tp, max(1, inp.pp), inp.bytes_per_param
    flops, bw = inp.peak_flops, inp.peak_bw

    weight_bytes = None if inp.weight_params is None else inp.weight_params * bpp
    kv: tuple[tuple[GpuMemory, float], ...] = ()
    if weight_bytes is not None:
        per_gpu = weight_bytes / (tp * pp)  # every GPU of an engine holds its share of the layers
        kv = tuple((g, g.total_bytes * gpu_memory_utilization - per_gpu) for g in gpus)

    replicas = max(1, replicas)
    ridge = flops * bpp / (2 * bw) if flops and bw else None
    stream = bw * tp / (rp * bpp) if bw and rp else None
    # One engine's ceiling: its tp x pp GPUs all computing once the pipeline holds a micro-batch
    # per stage. One stream crosses the stages in turn, so its speed is a stage's TP group's.
    engine_hw = flops * tp * pp / (2 * rp) if flops and rp else None
    hardware = None if engine_hw is None else engine_hw * replicas
    prefill_ceiling = hardware  # 2 × params FLOP per prompt token, at the compute peak

    loaded = batch is not None and batch > 0 and actual_tps is not None and actual_tps > 0
    if not loaded:
        reasons.append(R.NO_LOAD)
    batch_tps = efficiency = batch_eff = headroom = tpot_floor = prefill_floor = None
    shown_stream, shown_hw = (stream, hardware) if loaded else (None, None)
    if loaded and stream is not None and hardware is not None:
        assert batch is not None and actual_tps is not None and flops and bw and rp
        if actual_tps > hardware:
            # A catalog or measurement mismatch (e.g. speculative decoding): no ceiling at all.
            reasons.append(ACTUAL_ABOVE_CEILING)
            shown_stream = shown_hw = None
        else:
            # Σ over engines of min(B_e × stream, engine ceiling): equal when the engines are
            # balanced, an upper bound (never an understatement of the room) otherwise.
            batch_tps = min(batch * stream, hardware)
            efficiency = actual_tps / hardware
            batch_eff = actual_tps / batch_tps
            headroom = 1.0 - efficiency
        per_engine = batch / replicas  # a request is decoded by one engine, in its batch
        # A token crosses every stage: the weights read on tp GPUs per stage, the batch's FLOPs
        # shared by all tp x pp GPUs while micro-batches keep each stage busy.
        tpot_floor = max(rp * bpp / (bw * tp), per_engine * 2 * rp / (flops * tp * pp))
        if prompt_tokens_mean is not None and ridge is not None and per_engine < ridge:
            # One prompt crosses the stages in turn: one stage's TP group at a time.
            prefill_floor = prompt_tokens_mean / (hardware / (replicas * pp))
    return Roofline(
        weight_bytes=weight_bytes,
        ridge_batch_size=ridge,
        stream_tps=shown_stream,
        hardware_tps=shown_hw,
        batch_tps=batch_tps,
        efficiency=efficiency,
        batch_efficiency=batch_eff,
        headroom=headroom,
        tpot_floor_seconds=tpot_floor,
        prefill_ceiling_tps=prefill_ceiling,
        prefill_floor_seconds=prefill_floor,
        kv_headroom_bytes=kv,
        reasons=tuple(reasons),
    )
