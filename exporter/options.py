"""Every option the exporter takes: its flag, its ``VLLM_PROFILE_*`` environment twin and
config-file key, its default, what parses and checks its value, the subcommands it means
something to, and whether a pod may set it by annotation. One table (:data:`OPTIONS`): a new
option is one entry (its value's parser in :mod:`exporter.option_values`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter import option_values as V
from exporter.engines import ENGINES
from exporter.scrape.source import GPU_KINDS

ENV_PREFIX = "VLLM_PROFILE_"
POD_PREFIX = "vllm-profile-exporter/"  # annotation keys; exporter/pod_annotations.py reads them


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
        V.vllm_url,
        "http://localhost:8000",
        "vLLM base URL, or its /metrics URL",
        LIVE,
        per_pod=True,
    ),
    Option(
        "engine",
        V.engine_kind,
        "vllm",
        f"the inference engine at --vllm-url ({', '.join(ENGINES)}); a replay reads the "
        "recording's",
        LIVE,
    ),
    Option(
        "web.listen-address",
        V.listen_address,
        ":9709",
        "where /metrics listens, [HOST]:PORT",
        frozenset({"serve"}),
    ),
    Option(
        "web.config.file",
        V.file_path,
        None,
        "TLS and basic auth (Prometheus exporter-toolkit format)",
        frozenset({"serve"}),
    ),
    Option(
        "gpu", V.gpu_list, (), "GPU indices or UUIDs, comma-separated", LIVE, shown="all visible"
    ),
    Option(
        "gpu-source",
        V.choice(*GPU_KINDS),
        "nvml",
        "where GPU data comes from (replay: what recorded it)",
        choices=GPU_KINDS,
    ),
    Option(
        "dcgm-url",
        V.dcgm_url,
        None,
        "the node's dcgm-exporter /metrics URL (--gpu-source dcgm)",
        LIVE,
    ),
    Option("dcgm-pod", str, None, "keep dcgm-exporter series of this pod (downward API)", LIVE),
    Option("dcgm-namespace", str, None, "with --dcgm-pod: the pod's namespace", LIVE),
    Option(
        "vllm-replay",
        V.file_path,
        None,
        "vLLM data from this recording instead of vLLM",
        frozenset({"serve", "record"}),
    ),
    Option(
        "gpu-replay",
        V.file_path,
        None,
        "GPU data from this recording instead of NVML",
    ),
    Option(
        "max-num-seqs",
        V.positive_int,
        None,
        "vLLM's --max-num-seqs (not on vLLM's /metrics)",
        per_pod=True,
    ),
    Option(
        "tensor-parallel-size",
        V.tp_size,
        None,
        "vLLM's tensor parallel size",
        ANALYSE,
        shown="TENSOR_PARALLEL_SIZE, else VLLM_TENSOR_PARALLEL_SIZE, else GPUs seen / (PP x DP)",
        per_pod=True,
    ),
    Option(
        "pipeline-parallel-size",
        V.tp_size,
        None,
        "vLLM's pipeline parallel size",
        ANALYSE,
        shown="PIPELINE_PARALLEL_SIZE, else VLLM_PIPELINE_PARALLEL_SIZE, else 1",
        per_pod=True,
    ),
    Option(
        "dtype",
        V.dtype,
        None,
        "weight V.dtype: fp8, bf16, fp16, fp32",
        ANALYSE,
        shown="DTYPE, VLLM_DTYPE, the model name's suffix, vLLM's cache V.dtype, the catalog, bf16",
        per_pod=True,
    ),
    Option(
        "config-revision",
        V.revision,
        None,
        "the deployment's name for this configuration (e.g. the pod template hash): part of "
        "the identity Prometheus compares rollouts by",
        ANALYSE,
    ),
    Option(
        "cost-per-hour",
        V.dollars_per_hour,
        None,
        "USD per hour for the whole server",
        ANALYSE,
        per_pod=True,
    ),
    Option(
        "price",
        V.choice("on-demand", "spot"),
        "on-demand",
        "catalog price column",
        ANALYSE,
        ("on-demand", "spot"),
        per_pod=True,
    ),
    Option(
        "compute-peak",
        V.choice("tensor", "fp32"),
        "tensor",
        "roofline compute peak",
        ANALYSE,
        ("tensor", "fp32"),
        per_pod=True,
    ),
    Option(
        "catalog-file",
        V.file_path,
        None,
        "YAML file of extra or overriding catalog entries",
        ANALYSE,
    ),
    Option(
        "model-params",
        V.model_params,
        None,
        "TOTAL[,ACTIVE] parameter counts, e.g. 30e9,3e9",
        ANALYSE,
        per_pod=True,
    ),
    Option(
        "horizon",
        V.duration_in(4.0, 86400.0, "the horizon"),
        60.0,
        "aggregation and persistence horizon (two windows to a day), e.g. 5m",
        ANALYSE,
        duration=True,
    ),
    Option(
        "poll-interval",
        V.duration_in(0.05, 10.0, "the poll interval"),
        0.25,
        "fast interval between polls (50ms to 10s), e.g. 100ms",
        duration=True,
    ),
    Option(
        "calm-poll-interval",
        V.duration_in(0.05, 60.0, "the calm poll interval"),
        1.0,
        "vLLM poll interval while nothing could spike (never below --poll-interval; equal to "
        "it: a fixed cadence)",
        duration=True,
    ),
    Option(
        "idle-poll-interval",
        V.duration_in(0.05, 300.0, "the idle poll interval"),
        5.0,
        "vLLM poll interval after 30 s with nothing running, waiting or generated; a busy GPU "
        "(NVML or dcgm) wakes it at once (never below --calm-poll-interval; off with a fixed "
        "cadence)",
        duration=True,
    ),
    Option(
        "dcgm-poll-interval",
        V.duration_in(0.05, 300.0, "the dcgm poll interval"),
        None,
        "poll dcgm-exporter this often",
        duration=True,
        shown="as often as its values change, 1s to 30s",
    ),
    Option(
        "slo-ttft",
        V.duration_in(0.001, 3600.0, "the TTFT objective"),
        None,
        "a request meets the TTFT objective when its time to first token is at most this, "
        "e.g. 500ms (exports attainment, goodput and good/total counters)",
        ANALYSE,
        duration=True,
        per_pod=True,
    ),
    Option(
        "slo-tpot",
        V.duration_in(0.0001, 60.0, "the TPOT objective"),
        None,
        "a request meets the TPOT objective when its time per output token is at most this, "
        "e.g. 50ms",
        ANALYSE,
        duration=True,
        per_pod=True,
    ),
    Option(
        "log-level",
        V.choice("debug", "info", "warning", "error"),
        "info",
        "log verbosity",
        choices=("debug", "info", "warning", "error"),
    ),
)
BY_DEST = {o.dest: o for o in OPTIONS}
