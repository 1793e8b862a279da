"""Command line: ``serve``, ``record``, ``replay``. The only module that reads files and the
environment for configuration, and the only one that chooses an exit code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from exporter import __version__, pod_annotations, report
from exporter.app import demo_config, engine_kind, export_settings, target_shown
from exporter.catalog.schema import CatalogError
from exporter.config import Config, ConfigError, load_config
from exporter.derive.direction import Summary
from exporter.option_values import duration_in
from exporter.options import LIVE, OPTIONS, POD_PREFIX
from exporter.pipeline import Snapshot
from exporter.recording import Damage, RecordingError
from exporter.runs import NoData, metrics_text, record, run_live, run_replay
from exporter.service import start_service
from exporter.signals import route
from exporter.yamlsafe import YamlError, load_yaml, read_bounded

log = logging.getLogger("vllm_profile_exporter")


def _add_options(p: argparse.ArgumentParser, command: str) -> None:
    """The options that mean something to ``command``; the others are not offered (their env
    twins and config-file keys are still accepted, and ignored where they do not apply)."""
    p.add_argument("--config", type=Path, help="YAML file of options (keys are flag names)")
    if command in LIVE:
        p.add_argument(
            "--pod-annotations",
            type=Path,
            help="the pod's annotations as the downward API writes them: "
            f"{POD_PREFIX}<flag> annotations set that flag for this pod and win over the rest",
        )
    for o in OPTIONS:
        if command not in o.commands:
            continue
        p.add_argument(
            f"--{o.flag}",
            dest=o.dest,
            default=None,
            metavar="{" + ",".join(o.choices) + "}" if o.choices else None,
            help=f"{o.help} [env {o.env}; default {o.shown_default}]",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vllm-profile-exporter",
        description="Prometheus exporter that profiles a vLLM server against its hardware ceiling.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="poll vLLM and the GPUs, serve /metrics")
    serve.add_argument(
        "--demo",
        action="store_true",
        help="serve a bundled recording of a real vLLM server and H200 instead of live sources",
    )
    _add_options(serve, "serve")

    rec = sub.add_parser("record", help="write every raw poll to a recording (JSON Lines)")
    rec.add_argument("--output", "-o", type=Path, required=True, help="file; .gz compresses")
    rec.add_argument("--duration", default="60s", help="how long to record, e.g. 2m (default 60s)")
    _add_options(rec, "record")

    rep = sub.add_parser("replay", help="run the pipeline over a recording in simulated time")
    rep.add_argument("file", type=Path, help="recording (vLLM and/or GPU entries)")
    rep.add_argument(
        "--print-metrics", action="store_true", help="print the final /metrics text and exit"
    )
    rep.add_argument(
        "--diagnose",
        action="store_true",
        help="print the diagnosis; the whole recording is the horizon unless --horizon is given",
    )
    _add_report_options(rep)
    _add_options(rep, "replay")

    diag = sub.add_parser("diagnose", help="poll vLLM for a while and print one diagnosis")
    diag.add_argument("--url", dest="vllm_url_alias", help="vLLM base URL (same as --vllm-url)")
    diag.add_argument("--duration", default="2m", help="how long to measure, e.g. 30s (default 2m)")
    diag.add_argument(
        "--loop",
        action="store_true",
        help="re-measure after each change you make; after a Worse result, choose revert or "
        "continue",
    )
    _add_report_options(diag)
    _add_options(diag, "diagnose")
    return parser


def _add_report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="also list rules that did not fire")
    p.add_argument("--json", action="store_true", help="print the diagnosis as JSON")


def _config(args: argparse.Namespace, env: dict[str, str]) -> Config:
    file_values: dict[str, Any] = {}
    if args.config is not None:
        try:
            origin = f"--config {args.config}"
            loaded = load_yaml(read_bounded(args.config, origin), origin)
        except YamlError as e:
            raise ConfigError(str(e)) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"--config {args.config}: expected a mapping of option: value")
        file_values = {str(k): v for k, v in (loaded or {}).items()}
    flags = {o.dest: getattr(args, o.dest, None) for o in OPTIONS}
    if getattr(args, "vllm_url_alias", None):  # diagnose --url
        flags["vllm_url"] = args.vllm_url_alias
    return load_config(flags, env, file_values, _pod_settings(args))


def _pod_settings(args: argparse.Namespace) -> dict[str, str]:
    """The ``--pod-annotations`` file's settings, read again at every reload: the kubelet keeps
    the file current when the pod's annotations change."""
    path = getattr(args, "pod_annotations", None)
    if path is None:
        return {}
    origin = f"--pod-annotations {path}"
    try:
        text = read_bounded(path, origin, pod_annotations.MAX_BYTES).decode("utf-8")
        return pod_annotations.settings(pod_annotations.parse(text))
    except YamlError as e:
        raise ConfigError(str(e)) from None
    except (UnicodeDecodeError, pod_annotations.AnnotationError) as e:
        raise ConfigError(f"{origin}: {e}") from None


def _serve(cfg: Config, demo: bool, args: argparse.Namespace) -> int:
    if demo:
        cfg = demo_config(cfg)
    done = threading.Event()
    # A reload runs in its own thread, one at a time; a burst of SIGHUPs while one runs is one
    # more reload, of the file as it is then. Signals are routed before any thread starts.
    wanted = threading.Event()

    def stop() -> None:
        done.set()
        wanted.set()

    route({signal.SIGINT: stop, signal.SIGTERM: stop, signal.SIGHUP: wanted.set})
    service = start_service(cfg, demo=demo)

    def reload() -> None:
        try:
            new = _config(args, dict(os.environ))
            service.reload(demo_config(new) if demo else new)
            logging.getLogger().setLevel(new.log_level.upper())
            log.info("configuration reloaded: a new configuration epoch starts")
        except (ConfigError, CatalogError) as e:
            log.error("reload failed, keeping the running configuration: %s", e)
        except Exception as e:  # noqa: BLE001 - a reload that raised must not end serve
            log.error("reload failed, keeping the running configuration: %r", e)

    def reloads() -> None:
        while True:
            wanted.wait()
            wanted.clear()
            if done.is_set():
                return
            reload()

    threading.Thread(target=reloads, name="reload", daemon=True).start()
    log.info(
        "vllm-profile-exporter %s: profiling %s; metrics on http://%s/metrics",
        __version__,
        "a bundled DEMO recording (not live data)" if demo else target_shown(cfg, False),
        ("localhost" + cfg.web_listen_address)
        if cfg.web_listen_address.startswith(":")
        else cfg.web_listen_address,
    )
    done.wait()
    log.info("shutting down")
    service.stop()
    return 0


WHOLE_RUN = 1e9  # seconds: a horizon that never drops a window


def printable(text: str) -> str:
    r"""Control characters (a terminal escape in a model name, say) shown, not obeyed.

    >>> printable("model\x1b[2J\n")
    'model\\x1b[2J\n'
    """
    return "".join(
        c if c.isprintable() or c == "\n" else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


def _print_report(snap: Snapshot, cfg: Config, args: argparse.Namespace) -> None:
    mns = float(cfg.max_num_seqs) if cfg.max_num_seqs else None
    if args.json:
        settings = export_settings(cfg)
        a = snap.agg
        if cfg.horizon == WHOLE_RUN and a.horizon_start is not None and a.horizon_end is not None:
            # A whole recording's diagnosis: its horizon is the span replayed, not a setting.
            settings = replace(settings, horizon_seconds=a.horizon_end - a.horizon_start)
        print(json.dumps(report.to_dict(snap, settings), indent=2, sort_keys=True))
    else:
        text = report.render(snap, mns, verbose=args.verbose, engine=engine_kind(cfg))
        sys.stdout.write(printable(text))


def diagnose_loop(
    cfg: Config, duration: float, args: argparse.Namespace, stdin: TextIO, stdout: TextIO
) -> int:
    """Measure, report, compare with the baseline; repeat after each change the operator makes.

    After a Worse result the operator chooses: [r] revert (the baseline stays) or [c] continue
    (the degraded state becomes the new baseline). Otherwise each run becomes the baseline.
    """
    baseline: Summary | None = None
    iteration = 0
    while True:
        iteration += 1
        print(f"== run {iteration}: measuring for {duration:g} s ...", file=stdout, flush=True)
        pipeline = run_live(cfg, duration)
        snap, current = pipeline.snapshot, pipeline.summary()
        if baseline is not None:
            snap = replace(snap, direction=pipeline.compared_with(baseline))
        _print_report(snap, cfg, args)
        verdict = snap.direction.direction if snap.direction else None
        if verdict == "worse":
            print("Worse than the baseline. [r] revert or [c] continue? ", end="", file=stdout,
                  flush=True)  # fmt: skip
            answer = stdin.readline().strip().lower()
            if answer.startswith("c"):
                baseline = current
                print("Continuing: this state is the new baseline.", file=stdout)
            else:
                print("Revert your change; the baseline is unchanged.", file=stdout)
        else:
            baseline = current
        print("Make a change, then press Enter to re-measure ([q] to quit): ", end="",
              file=stdout, flush=True)  # fmt: skip
        line = stdin.readline()
        if not line or line.strip().lower().startswith("q"):
            return 0


RECORD_DURATION = duration_in(1.0, 7 * 86400.0, "--duration")
DIAGNOSE_DURATION = duration_in(2.0, 86400.0, "--duration")


def _duration(text: str, parse: Any) -> float:
    try:
        value: float = parse(text)
    except ValueError as e:
        raise ConfigError(f"--duration: invalid value {text!r}: {e}") from None
    return value


def _record(cfg: Config, args: argparse.Namespace) -> int:
    duration = _duration(args.duration, RECORD_DURATION)
    stop = threading.Event()
    route({signal.SIGINT: stop.set, signal.SIGTERM: stop.set})  # finish the file, then exit
    n = record(cfg, args.output, duration, stop)
    log.info("recorded %d polls to %s%s", n, args.output, " (stopped early)" if stop.is_set()
             else "")  # fmt: skip
    return 0


def _replay(cfg: Config, args: argparse.Namespace) -> int:
    # Without --horizon, the diagnosis covers the latest configuration epoch whole, and the
    # direction compares it with the whole epoch before (a restart in the recording).
    whole = args.diagnose and args.horizon is None
    cfg = replace(cfg, engine=engine_kind(cfg, args.file))  # the recording's own
    if whole:
        cfg = replace(cfg, horizon=WHOLE_RUN)
    damage: list[Damage] = []
    pipeline = run_replay(cfg, args.file, cfg.gpu_replay, damage, whole_epochs=whole)
    for d in damage:
        if d.where is not None:
            print(f"vllm-profile-exporter: warning: {d}; replayed everything before it",
                  file=sys.stderr)  # fmt: skip
    if args.print_metrics:
        sys.stdout.write(metrics_text(pipeline, export_settings(cfg)))
    elif args.diagnose:
        _print_report(pipeline.snapshot, cfg, args)
    else:
        snap = pipeline.snapshot
        print(f"replayed {snap.ticks} polls into {len(pipeline.windows)} windows")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = _config(args, dict(os.environ))
    except ConfigError as e:
        print(f"vllm-profile-exporter: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=cfg.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "serve":
            return _serve(cfg, args.demo, args)
        if args.command == "record":
            return _record(cfg, args)
        if args.command == "replay":
            return _replay(cfg, args)
        if args.command == "diagnose":
            duration = _duration(args.duration, DIAGNOSE_DURATION)
            if args.loop:
                return diagnose_loop(cfg, duration, args, sys.stdin, sys.stdout)
            _print_report(run_live(cfg, duration).snapshot, cfg, args)
            return 0
    except (ConfigError, CatalogError) as e:
        print(f"vllm-profile-exporter: {e}", file=sys.stderr)
        return 2
    except RecordingError as e:
        print(f"vllm-profile-exporter: bad recording: {e}", file=sys.stderr)
        return 1
    except NoData as e:
        print(f"vllm-profile-exporter: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"vllm-profile-exporter: {e}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
