"""One exporter of the fleet test, as a process: a recording replayed into the exporter's own
pipeline and served by its own HTTP server and collector, frozen, so that a test reads the same
/metrics Prometheus scrapes. SIGUSR1 replays the rest of the recording (its counters step
forward once) and serves that, frozen again.

``python -m tests.fleet_member --listen 127.0.0.1:PORT --vllm REC [--gpu REC] --split 0.5
--option max-num-seqs=8 ...``; prints ``ready`` and, after SIGUSR1, ``advanced``.
"""

from __future__ import annotations

import argparse
import signal
import threading
from dataclasses import replace
from pathlib import Path

from exporter import __version__
from exporter.app import engine_kind, export_settings, make_pipeline, make_render_cache
from exporter.config import load_config
from exporter.export.http import make_handler
from exporter.export.server import HttpServer
from exporter.export.status_page import PageContext, StatusPage
from exporter.scrape.replay import replay_ticks
from exporter.signals import route


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--vllm", type=Path, required=True)
    ap.add_argument("--gpu", type=Path)
    ap.add_argument("--split", type=float, default=0.5, help="share of ticks served first")
    ap.add_argument("--option", action="append", default=[], help="FLAG=VALUE, as in --config")
    args = ap.parse_args()
    options = dict(o.split("=", 1) for o in args.option)
    cfg = load_config({}, {}, options)
    cfg = replace(cfg, engine=engine_kind(cfg, args.vllm))  # the recording's own, as replay does
    pipeline = make_pipeline(cfg, False)
    ticks = list(replay_ticks(args.vllm, args.gpu))
    first = int(len(ticks) * args.split)
    for tick in ticks[:first]:
        pipeline.offer(tick)

    settings = export_settings(cfg)
    context = PageContext(__version__, f"a replay of {args.vllm.name}")
    page = StatusPage(lambda: pipeline.snapshot, lambda: settings, lambda: context,
                      clock=lambda: (pipeline.snapshot.agg.horizon_end or 0.0) + 0.5)  # fmt: skip
    cache = make_render_cache(pipeline, settings, process=True)
    advance, stop = threading.Event(), threading.Event()
    route({signal.SIGUSR1: advance.set, signal.SIGTERM: stop.set})  # before any thread starts
    server = HttpServer(make_handler(cache, page, ready=lambda: True), args.listen)
    server.start()

    print("ready", flush=True)
    while not stop.is_set():
        if advance.wait(0.2):
            advance.clear()
            for tick in ticks[first:]:
                pipeline.offer(tick)
            first = len(ticks)
            print("advanced", flush=True)
    server.stop()


if __name__ == "__main__":
    main()
