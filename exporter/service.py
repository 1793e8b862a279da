"""A running exporter (``serve``): the poll loop and the HTTP server, started together, and what
a reload (SIGHUP) or a change of the web configuration's files may replace while it runs."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from exporter.app import (
    Ref,
    export_settings,
    load_catalog,
    make_loop,
    make_pipeline,
    make_render_cache,
    make_sources,
    page_context,
    roofline_settings,
)
from exporter.config import Config, ConfigError
from exporter.export.collector import (
    ExportSettings,
)
from exporter.export.http import make_handler
from exporter.export.server import HttpServer, WebSettings
from exporter.export.status_page import PageContext, StatusPage
from exporter.export.webconfig import BasicAuth, WebConfig, load_web_config, signature
from exporter.loop import LoopStats, PollLoop

log = logging.getLogger(__name__)


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
