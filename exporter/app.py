"""Wiring: config → sources → pipeline → collector → HTTP. No argument parsing here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.catalog.schema import Catalog, CatalogError, parse_catalog
from exporter.config import Config
from exporter.derive.resolve import RooflineSettings
from exporter.export.collector import (
    ExportSettings,
    ScheduleCollector,
    SnapshotCollector,
    window_key,
)
from exporter.export.http import RenderCache, landing_page, make_handler
from exporter.export.server import HttpServer
from exporter.export.webconfig import BasicAuth, WebConfig, load_web_config
from exporter.loop import LoopStats, PollLoop, VllmSource
from exporter.pipeline import Pipeline, Snapshot
from exporter.recording import RecordingWriter, gpu_entry
from exporter.samples import PollError, Tick
from exporter.scrape.dcgm import DcgmSelector, DcgmSource
from exporter.scrape.nvml import GpuSource, NoGpuSource, NvmlSource, NvmlUnavailable
from exporter.scrape.replay import ReplayGpuSource, ReplayVllmSource, replay_ticks
from exporter.scrape.vllm_fetch import VllmFetcher

log = logging.getLogger(__name__)

DEMO_VLLM = "demo-vllm-saturation.jsonl.gz"
DEMO_GPU = "demo-gpu-h200.jsonl.gz"


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
            text = cfg.catalog_file.read_text("utf-8")
        except OSError as e:
            raise CatalogError(f"{cfg.catalog_file}: cannot read: {e.strerror}") from None
        catalog = catalog.merged(parse_catalog(text, str(cfg.catalog_file)))
    return catalog


def roofline_settings(cfg: Config, catalog: Catalog) -> RooflineSettings:
    return RooflineSettings(
        catalog=catalog,
        compute_peak=cfg.compute_peak,
        dtype_flag=cfg.dtype,
        dtype_env=cfg.dtype_env,
        tp=cfg.tp,
        tp_source=cfg.tp_source,
        model_params=cfg.model_params,
        cost_per_hour=cfg.cost_per_hour,
        price=cfg.price,
    )


def make_pipeline(cfg: Config) -> Pipeline:
    return Pipeline(
        horizon_seconds=cfg.horizon,
        poll_interval=cfg.poll_interval,
        ticks_per_window=cfg.ticks_per_window,
        gpu_source_name=gpu_source_name(cfg),
        roofline=roofline_settings(cfg, load_catalog(cfg)),
        max_num_seqs=float(cfg.max_num_seqs) if cfg.max_num_seqs else None,
    )


def export_settings(cfg: Config, demo: bool = False) -> ExportSettings:
    return ExportSettings(
        version=__version__,
        horizon_seconds=cfg.horizon,
        poll_interval=cfg.poll_interval,
        max_num_seqs=float(cfg.max_num_seqs) if cfg.max_num_seqs else None,
        demo=demo,
        compute_peak=cfg.compute_peak,
        tensor_parallel_size=cfg.tp,
        tensor_parallel_source=cfg.tp_source,
    )


def make_registry(
    pipeline: Pipeline,
    settings: ExportSettings,
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
    settings: ExportSettings,
    process: bool,
    loop_stats: Callable[[], LoopStats] | None = None,
) -> RenderCache:
    """The families of :func:`make_registry`, in the same order, split by how often they change:
    the sources' health every poll, the derived families when a window closes, the schedule's
    and the process's every poll."""

    def snapshot() -> Snapshot:
        return pipeline.snapshot

    live: list[Collector] = [ScheduleCollector(loop_stats)] if loop_stats else []
    if process:
        live.append(ProcessCollector(registry=None))
    return RenderCache(
        [
            ([SnapshotCollector(snapshot, settings, part="poll")], snapshot),
            (
                [SnapshotCollector(snapshot, settings, part="window")],
                lambda: window_key(snapshot()),
            ),
            (live, snapshot),
        ]
    )


def make_sources(
    cfg: Config, clock: Callable[[], float], loop_replay: bool = False
) -> tuple[VllmSource, GpuSource | None]:
    vllm: VllmSource
    if cfg.vllm_replay is not None:
        vllm = ReplayVllmSource(cfg.vllm_replay, clock, loop=loop_replay)
    else:
        vllm = VllmFetcher(cfg.vllm_url, timeout=cfg.fetch_timeout, clock=clock)
    gpu: GpuSource | None
    if cfg.gpu_replay is not None:
        gpu = ReplayGpuSource(cfg.gpu_replay, clock, loop=loop_replay)
    elif cfg.gpu_source == "none":
        gpu = None
    elif cfg.gpu_source == "dcgm":
        assert cfg.dcgm_url is not None
        selector = DcgmSelector(pod=cfg.dcgm_pod, namespace=cfg.dcgm_namespace, gpus=cfg.gpu)
        gpu = DcgmSource(cfg.dcgm_url, selector, timeout=cfg.fetch_timeout * 4, clock=clock)
    else:
        try:
            gpu = NvmlSource(clock=clock, gpus=cfg.gpu)
        except NvmlUnavailable as e:
            log.warning("NVML unavailable, running on vLLM data alone: %s", e)
            gpu = NoGpuSource(clock, "unavailable", str(e))
    return vllm, gpu


@dataclass
class Service:
    """A running exporter: poll loop plus HTTP server."""

    loop: PollLoop
    server: HttpServer
    gpu: GpuSource | None

    def reload(self, cfg: Config) -> None:
        """Apply a changed configuration's catalog, roofline and rule settings (SIGHUP).

        Raises CatalogError (the running configuration then stays as it was).
        """
        settings = roofline_settings(cfg, load_catalog(cfg))
        mns = float(cfg.max_num_seqs) if cfg.max_num_seqs else None
        self.loop.pipeline.reconfigure(settings, mns)

    def stop(self) -> None:
        self.loop.stop()
        self.server.stop()
        if self.gpu is not None:
            self.gpu.close()


def start_service(cfg: Config, demo: bool = False) -> Service:
    clock = time.time
    pipeline = make_pipeline(cfg)  # first: a bad catalog must fail before any source opens
    vllm, gpu = make_sources(cfg, clock, loop_replay=demo)
    settings = export_settings(cfg, demo)
    loop = PollLoop(pipeline, vllm, gpu, interval=cfg.poll_interval)

    def stats() -> LoopStats:
        return loop.stats

    registry = make_registry(pipeline, settings, process=True, loop_stats=stats)
    cache = make_render_cache(pipeline, settings, process=True, loop_stats=stats)
    target = "bundled demo recording" if demo else str(cfg.vllm_replay or cfg.vllm_url)
    web = load_web_config(cfg.web_config_file) if cfg.web_config_file else WebConfig()
    handler = make_handler(
        registry,
        landing_page(__version__, target, demo),
        ready=lambda: pipeline.snapshot.ticks > 0,
        cache=cache,
    )
    auth = BasicAuth(web.users) if web.users else None
    server = HttpServer(handler, cfg.web_listen_address, web.ssl_context, auth, web.headers)
    server.start()
    loop.start()
    return Service(loop, server, gpu)


def run_replay(cfg: Config, vllm_path: Path | None, gpu_path: Path | None) -> Pipeline:
    """The unchanged pipeline over whole recordings, in recorded time."""
    pipeline = make_pipeline(cfg)
    for tick in replay_ticks(vllm_path, gpu_path):
        pipeline.add_tick(tick)
    return pipeline


def run_live(cfg: Config, duration: float) -> Pipeline:
    """Poll the live sources for ``duration`` seconds; the whole run is the horizon."""
    cfg = replace(cfg, horizon=max(cfg.horizon, duration + 2 * cfg.poll_interval))
    pipeline = make_pipeline(cfg)
    vllm, gpu = make_sources(cfg, time.time)
    loop = PollLoop(pipeline, vllm, gpu, interval=cfg.poll_interval)
    try:
        loop.run(duration=duration)
    finally:
        loop.stop()
        if gpu is not None:
            gpu.close()
    return pipeline


def metrics_text(pipeline: Pipeline, settings: ExportSettings) -> str:
    """What ``/metrics`` would show now, without the exporter's own process metrics."""
    return generate_latest(make_registry(pipeline, settings, process=False)).decode()


def record(cfg: Config, output: Path, duration: float) -> int:
    """Poll live sources for ``duration`` seconds, writing every raw poll to ``output``."""
    clock = time.time
    pipeline = make_pipeline(cfg)
    vllm, gpu = make_sources(cfg, clock)
    writer = RecordingWriter(
        output,
        {
            "exporter_version": __version__,
            "config": {"vllm_url": cfg.vllm_url, "poll_interval": cfg.poll_interval},
        },
    )
    fetcher = vllm if isinstance(vllm, VllmFetcher) else None

    def on_tick(tick: Tick) -> None:
        for entry in _entries(tick, fetcher, cfg.gpu_source):
            writer.write(entry)

    loop = PollLoop(pipeline, vllm, gpu, interval=cfg.poll_interval, on_tick=on_tick)
    try:
        loop.run(duration=duration)
    finally:
        loop.stop()
        writer.close()
        if gpu is not None:
            gpu.close()
    return loop.stats.ticks


def _entries(
    tick: Tick, fetcher: VllmFetcher | None, gpu_source: str
) -> Iterable[dict[str, object]]:
    if tick.models is not None and fetcher is not None and fetcher.last_models_body is not None:
        yield {
            "t": tick.models.observed_at,
            "source": "vllm_models",
            "body": fetcher.last_models_body,
        }
    if isinstance(tick.vllm, PollError):
        yield {"t": tick.vllm.observed_at, "source": "vllm", "error": tick.vllm.reason}
    elif tick.vllm is not None and fetcher is not None and fetcher.last_body is not None:
        yield {"t": tick.vllm.observed_at, "source": "vllm", "body": fetcher.last_body}
    if tick.gpu is not None and not (
        isinstance(tick.gpu, PollError) and tick.gpu.reason == "unavailable"
    ):
        yield gpu_entry(tick.gpu, gpu_source)
