"""The exporter's finite runs: a replay of recordings, a live measurement of a set duration
(``diagnose``), and a recording (``record``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from prometheus_client import generate_latest

from exporter import __version__
from exporter.app import (
    make_loop,
    make_pipeline,
    make_registry,
    make_sources,
    target_shown,
)
from exporter.config import Config
from exporter.engines import MODELS_SUFFIX, engine
from exporter.export.collector import (
    ExportSettings,
)
from exporter.loop import PollLoop
from exporter.pipeline import Pipeline
from exporter.recording import Damage, RecordingWriter, gpu_entry
from exporter.samples import EngineSample, PollError, Tick
from exporter.scrape.http_get import redact
from exporter.scrape.replay import (
    replay_ticks,
)

log = logging.getLogger(__name__)


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
