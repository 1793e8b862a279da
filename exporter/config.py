"""Configuration: flags, their ``VLLM_PROFILE_*`` environment twins, and an optional YAML file.

Precedence: flag > environment > file > default. Built from values passed in (``load_config``
never reads files or the environment itself), and validated into a frozen :class:`Config`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.derive.resolve import normalize_dtype
from exporter.engines import ENGINES, engine
from exporter.scrape.engine_fetch import split_metrics_url
from exporter.scrape.http_get import parse_target, redact
from exporter.scrape.source import GPU_KINDS

ENV_PREFIX = "VLLM_PROFILE_"
POD_PREFIX = "vllm-profile-exporter/"  # annotation keys; exporter/pod_annotations.py reads them


class ConfigError(ValueError):
    """Invalid configuration; the message names the option and the value."""


def parse_duration(text: str) -> float:
    """``250ms``, ``2s``, ``1m``, ``1h`` or plain seconds → seconds.

    >>> parse_duration("250ms"), parse_duration("60s"), parse_duration("2m"), parse_duration("1.5")
    (0.25, 60.0, 120.0, 1.5)
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    scale = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[m.group(2)]
    return float(m.group(1)) * scale


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(str(text).strip())
        except ValueError:
            raise ValueError(f"must be a whole number from {low} to {high}") from None
        if not low <= v <= high:
            raise ValueError(f"must be from {low} to {high}")
        return v

    return parse


_positive_int = _int_in(1, 1_000_000)
_tp_size = _int_in(1, 4096)


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        v = str(text).lower()
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return v

    return parse


def _gpu_list(text: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in str(text).split(",") if x.strip())
    for x in items:
        if not (x.isdigit() or x.startswith(("GPU-", "MIG-"))):
            raise ValueError(f"{x!r} is neither a GPU index nor a UUID")
    return items


def _path(text: str) -> Path:
    return Path(str(text))


def _float_in(low: float, high: float) -> Callable[[str], float]:
    """A finite number in [low, high] (NaN, infinities and overflows refused)."""

    def parse(text: str) -> float:
        try:
            v = float(str(text).strip())
        except ValueError:
            raise ValueError(f"must be a number from {low:g} to {high:g}") from None
        if not (math.isfinite(v) and low <= v <= high):
            raise ValueError(f"must be a number from {low:g} to {high:g}")
        return v

    return parse


_dollars_per_hour = _float_in(1e-4, 1e5)
_params = _float_in(1e3, 1e14)  # a thousand (test models) to a hundred trillion parameters


def duration_in(low: float, high: float, what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        v = parse_duration(text)
        if not (math.isfinite(v) and low <= v <= high):
            raise ValueError(f"{what} must be from {low:g}s to {high:g}s")
        return v

    return parse


def _vllm_url(text: str) -> str:
    url = str(text).strip()
    parse_target(split_metrics_url(url)[1])  # raises ValueError naming the problem
    return url


def _engine(text: str) -> str:
    return engine(str(text).strip()).kind  # raises ValueError naming the kinds there are


def _dcgm_url(text: str) -> str:
    url = str(text).strip()
    parse_target(url)
    return url


def _listen_address(text: str) -> str:
    addr = str(text).strip()
    parse_listen_address(addr)
    return addr


def parse_listen_address(addr: str) -> tuple[str, int]:
    """``:9709`` → all interfaces; ``127.0.0.1:9709``; ``[::1]:9709``.

    >>> parse_listen_address(":9709"), parse_listen_address("[::1]:80")
    (('0.0.0.0', 9709), ('::1', 80))
    """
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected [HOST]:PORT with a port from 0 to 65535, got {addr!r}")
    if host.startswith("[") != host.endswith("]") or any(c.isspace() for c in host):
        raise ValueError(f"expected [HOST]:PORT, got {addr!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _revision(text: str) -> str:
    v = str(text).strip()  # empty: none (a pod label the downward API found missing)
    if not re.fullmatch(r"[A-Za-z0-9._-]{0,64}", v):
        raise ValueError("must be up to 64 letters, digits, '.', '_' or '-'")
    return v


def _dtype(text: str) -> str:
    d = normalize_dtype(str(text))
    if d is None:
        raise ValueError("must be one of fp8, bf16, fp16, fp32 (or int8, int4, fp4)")
    return d


def _model_params(text: str) -> tuple[float, float | None]:
    """``TOTAL[,ACTIVE]`` parameter counts, e.g. ``30e9,3e9``."""
    parts = [p.strip() for p in str(text).split(",")]
    if not 1 <= len(parts) <= 2:
        raise ValueError("expected TOTAL[,ACTIVE], e.g. 30e9,3e9")
    nums = [_params(p) for p in parts]
    if len(nums) == 2 and nums[1] > nums[0]:
        raise ValueError("active parameters cannot exceed total parameters")
    return nums[0], nums[1] if len(nums) == 2 else None


LIVE = frozenset({"serve", "record", "diagnose"})  # the commands that poll live sources
ANALYSE = frozenset({"serve", "replay", "diagnose"})  # the commands that derive figures
ALL = LIVE | ANALYSE


@dataclass(frozen=True, slots=True)
class Option:
    """One option: its flag, env twin and config-file key, and the subcommands it means
    something to (a subcommand's --help lists only its own)."""

    flag: str  # without the leading dashes
    parse: Callable[[str], Any]
    default: Any
    help: str
    commands: frozenset[str] = ALL
    choices: tuple[str, ...] = ()
    duration: bool = False  # seconds, shown as 250ms / 60s
    shown: str | None = None  # the default in words, where it is not one value
    per_pod: bool = False  # a vLLM pod may set it by annotation (exporter/pod_annotations.py)

    @property
    def shown_default(self) -> str:
        """The default as a person would type it."""
        d = self.default
        if self.shown is not None:
            return self.shown
        if d is None or d == ():
            return "none"
        if self.duration and isinstance(d, float):
            return f"{d * 1000:g}ms" if d < 1 else f"{d:g}s"
        return str(d)

    @property
    def dest(self) -> str:
        return self.flag.replace("-", "_").replace(".", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


OPTIONS: tuple[Option, ...] = (
    Option(
        "vllm-url",
        _vllm_url,
        "http://localhost:8000",
        "vLLM base URL, or its /metrics URL",
        LIVE,
        per_pod=True,
    ),
    Option(
        "engine",
        _engine,
        "vllm",
        f"the inference engine at --vllm-url ({', '.join(ENGINES)}); a replay reads the "
        "recording's",
        LIVE,
    ),
    Option(
        "web.listen-address",
        _listen_address,
        ":9709",
        "where /metrics listens, [HOST]:PORT",
        frozenset({"serve"}),
    ),
    Option(
        "web.config.file",
        _path,
        None,
        "TLS and basic auth (Prometheus exporter-toolkit format)",
        frozenset({"serve"}),
    ),
    Option(
        "gpu", _gpu_list, (), "GPU indices or UUIDs, comma-separated", LIVE, shown="all visible"
    ),
    Option(
        "gpu-source",
        _choice(*GPU_KINDS),
        "nvml",
        "where GPU data comes from (replay: what recorded it)",
        choices=GPU_KINDS,
    ),
    Option(
        "dcgm-url",
        _dcgm_url,
        None,
        "the node's dcgm-exporter /metrics URL (--gpu-source dcgm)",
        LIVE,
    ),
    Option("dcgm-pod", str, None, "keep dcgm-exporter series of this pod (downward API)", LIVE),
    Option("dcgm-namespace", str, None, "with --dcgm-pod: the pod's namespace", LIVE),
    Option(
        "vllm-replay",
        _path,
        None,
        "vLLM data from this recording instead of vLLM",
        frozenset({"serve", "record"}),
    ),
    Option(
        "gpu-replay",
        _path,
        None,
        "GPU data from this recording instead of NVML",
    ),
    Option(
        "max-num-seqs",
        _positive_int,
        None,
        "vLLM's --max-num-seqs (not on vLLM's /metrics)",
        per_pod=True,
    ),
    Option(
        "tensor-parallel-size",
        _tp_size,
        None,
        "vLLM's tensor parallel size",
        ANALYSE,
        shown="TENSOR_PARALLEL_SIZE, else VLLM_TENSOR_PARALLEL_SIZE, else GPUs seen / (PP x DP)",
        per_pod=True,
    ),
    Option(
        "pipeline-parallel-size",
        _tp_size,
        None,
        "vLLM's pipeline parallel size",
        ANALYSE,
        shown="PIPELINE_PARALLEL_SIZE, else VLLM_PIPELINE_PARALLEL_SIZE, else 1",
        per_pod=True,
    ),
    Option(
        "dtype",
        _dtype,
        None,
        "weight dtype: fp8, bf16, fp16, fp32",
        ANALYSE,
        shown="DTYPE, VLLM_DTYPE, the model name's suffix, vLLM's cache dtype, the catalog, bf16",
        per_pod=True,
    ),
    Option(
        "config-revision",
        _revision,
        None,
        "the deployment's name for this configuration (e.g. the pod template hash): part of "
        "the identity Prometheus compares rollouts by",
        ANALYSE,
    ),
    Option(
        "cost-per-hour",
        _dollars_per_hour,
        None,
        "USD per hour for the whole server",
        ANALYSE,
        per_pod=True,
    ),
    Option(
        "price",
        _choice("on-demand", "spot"),
        "on-demand",
        "catalog price column",
        ANALYSE,
        ("on-demand", "spot"),
        per_pod=True,
    ),
    Option(
        "compute-peak",
        _choice("tensor", "fp32"),
        "tensor",
        "roofline compute peak",
        ANALYSE,
        ("tensor", "fp32"),
        per_pod=True,
    ),
    Option(
        "catalog-file", _path, None, "YAML file of extra or overriding catalog entries", ANALYSE
    ),
    Option(
        "model-params",
        _model_params,
        None,
        "TOTAL[,ACTIVE] parameter counts, e.g. 30e9,3e9",
        ANALYSE,
        per_pod=True,
    ),
    Option(
        "horizon",
        duration_in(4.0, 86400.0, "the horizon"),
        60.0,
        "aggregation and persistence horizon (two windows to a day), e.g. 5m",
        ANALYSE,
        duration=True,
    ),
    Option(
        "poll-interval",
        duration_in(0.05, 10.0, "the poll interval"),
        0.25,
        "fast interval between polls (50ms to 10s), e.g. 100ms",
        duration=True,
    ),
    Option(
        "calm-poll-interval",
        duration_in(0.05, 60.0, "the calm poll interval"),
        1.0,
        "vLLM poll interval while nothing could spike (never below --poll-interval; equal to "
        "it: a fixed cadence)",
        duration=True,
    ),
    Option(
        "idle-poll-interval",
        duration_in(0.05, 300.0, "the idle poll interval"),
        5.0,
        "vLLM poll interval after 30 s with nothing running, waiting or generated; a busy GPU "
        "(NVML or dcgm) wakes it at once (never below --calm-poll-interval; off with a fixed "
        "cadence)",
        duration=True,
    ),
    Option(
        "dcgm-poll-interval",
        duration_in(0.05, 300.0, "the dcgm poll interval"),
        None,
        "poll dcgm-exporter this often",
        duration=True,
        shown="as often as its values change, 1s to 30s",
    ),
    Option(
        "slo-ttft",
        duration_in(0.001, 3600.0, "the TTFT objective"),
        None,
        "a request meets the TTFT objective when its time to first token is at most this, "
        "e.g. 500ms (exports attainment, goodput and good/total counters)",
        ANALYSE,
        duration=True,
        per_pod=True,
    ),
    Option(
        "slo-tpot",
        duration_in(0.0001, 60.0, "the TPOT objective"),
        None,
        "a request meets the TPOT objective when its time per output token is at most this, "
        "e.g. 50ms",
        ANALYSE,
        duration=True,
        per_pod=True,
    ),
    Option(
        "log-level",
        _choice("debug", "info", "warning", "error"),
        "info",
        "log verbosity",
        choices=("debug", "info", "warning", "error"),
    ),
)
BY_DEST = {o.dest: o for o in OPTIONS}


@dataclass(frozen=True, slots=True)
class Config:
    vllm_url: str
    engine: str
    web_listen_address: str
    web_config_file: Path | None
    gpu: tuple[str, ...]
    gpu_source: str
    dcgm_url: str | None
    dcgm_pod: str | None
    dcgm_namespace: str | None
    vllm_replay: Path | None
    gpu_replay: Path | None
    max_num_seqs: int | None
    tensor_parallel_size: int | None
    pipeline_parallel_size: int | None
    dtype: str | None
    config_revision: str | None
    cost_per_hour: float | None
    price: str
    compute_peak: str
    catalog_file: Path | None
    model_params: tuple[float, float | None] | None
    horizon: float
    poll_interval: float
    calm_poll_interval: float
    idle_poll_interval: float
    dcgm_poll_interval: float | None
    slo_ttft: float | None
    slo_tpot: float | None
    log_level: str
    # Declared parallelism: flag → TENSOR_PARALLEL_SIZE → VLLM_TENSOR_PARALLEL_SIZE. An undeclared
    # TP (None, source "") is derived from the GPUs seen once they are (derive/resolve.py).
    tp: int | None = None
    tp_source: str = ""
    pp: int = 1  # flag → PIPELINE_PARALLEL_SIZE → VLLM_PIPELINE_PARALLEL_SIZE → 1
    pp_source: str = "default"
    dtype_env: str | None = None  # DTYPE, else VLLM_DTYPE

    @property
    def poll_deadline(self) -> float:
        """The hard limit on one poll's whole exchange: above the poll interval, so a busy vLLM
        that answers in 300 ms is polled less often rather than reported down."""
        return max(1.0, 4 * self.poll_interval)


def _shown(raw: Any) -> str:
    """A value as an error message may show it: credentials redacted, length bounded."""
    text = redact(str(raw))
    return repr(text if len(text) <= 80 else text[:80] + "…")


def _declared(
    flag: int | None, env: Mapping[str, str], names: tuple[str, ...]
) -> tuple[int | None, str]:
    """A parallel size as declared: the flag (or its VLLM_PROFILE_ twin or config key), else the
    first of ``names`` in the environment (the variables vLLM's own deployments set); (None, "")
    when nothing declares it."""
    if flag is not None:
        return flag, "flag"
    for name in names:
        if env.get(name, "") != "":
            try:
                return _tp_size(env[name]), "env"
            except ValueError as e:
                raise ConfigError(f"{name}: invalid value {env[name]!r}: {e}") from None
    return None, ""


def load_config(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    file_values: Mapping[str, Any],
    pod_values: Mapping[str, str] | None = None,
) -> Config:
    """Merge the layers and validate. ``flags`` holds only options given on the command line (by
    dest); ``file_values`` the YAML mapping and ``pod_values`` the pod's annotations (both keyed
    by flag name). A pod's annotation is the most specific and wins: the flags, environment and
    file are a chart release's, shared by every pod it serves. An empty variable counts as unset,
    since the downward API writes "" for an annotation the pod does not have."""
    unknown = sorted(set(file_values) - {o.flag for o in OPTIONS})
    if unknown:
        raise ConfigError(f"config file: unknown key {unknown[0]!r}")
    pod = dict(pod_values or {})
    for flag in sorted(pod):
        if flag not in {o.flag for o in OPTIONS if o.per_pod}:
            raise ConfigError(
                f"pod annotation {POD_PREFIX}{flag}: not a per-pod setting (those are: "
                + ", ".join(o.flag for o in OPTIONS if o.per_pod)
                + ")"
            )
    values: dict[str, Any] = {}
    for o in OPTIONS:
        if o.flag in pod:
            raw, where = pod[o.flag], f"pod annotation {POD_PREFIX}{o.flag}"
        elif flags.get(o.dest) is not None:
            raw, where = flags[o.dest], f"--{o.flag}"
        elif env.get(o.env, "") != "":
            raw, where = env[o.env], o.env
        elif o.flag in file_values:
            raw, where = file_values[o.flag], f"config file key {o.flag!r}"
        else:
            values[o.dest] = o.default
            continue
        try:
            values[o.dest] = o.parse(raw)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where}: invalid value {_shown(raw)}: {e}") from None
    values["tp"], values["tp_source"] = _declared(
        values["tensor_parallel_size"], env, ("TENSOR_PARALLEL_SIZE", "VLLM_TENSOR_PARALLEL_SIZE")
    )
    pp, pp_source = _declared(
        values["pipeline_parallel_size"],
        env,
        ("PIPELINE_PARALLEL_SIZE", "VLLM_PIPELINE_PARALLEL_SIZE"),
    )
    values["pp"], values["pp_source"] = (1, "default") if pp is None else (pp, pp_source)
    for name in ("DTYPE", "VLLM_DTYPE"):
        if env.get(name):
            try:
                values["dtype_env"] = _dtype(env[name])
            except ValueError as e:
                raise ConfigError(f"{name}: invalid value {env[name]!r}: {e}") from None
            break
    cfg = Config(**values)
    if cfg.gpu_replay is not None and cfg.gpu_source == "none":
        raise ConfigError("--gpu-replay conflicts with --gpu-source none")
    if cfg.gpu_source == "dcgm" and not cfg.dcgm_url and cfg.gpu_replay is None:
        raise ConfigError("--gpu-source dcgm needs --dcgm-url (the node's dcgm-exporter /metrics)")
    return cfg
