"""Configuration: flags, their ``VLLM_PROFILE_*`` environment twins, an optional YAML file, and a
pod's annotations, merged over the options of :mod:`exporter.options`.

Precedence: pod annotation > flag > environment > file > default. Built from values passed in
(``load_config`` never reads files or the environment itself), and validated into a frozen
:class:`Config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.option_values import dtype, tp_size
from exporter.options import OPTIONS, POD_PREFIX
from exporter.scrape.http_get import redact


class ConfigError(ValueError):
    """Invalid configuration; the message names the option and the value."""


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
                return tp_size(env[name]), "env"
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
                values["dtype_env"] = dtype(env[name])
            except ValueError as e:
                raise ConfigError(f"{name}: invalid value {env[name]!r}: {e}") from None
            break
    cfg = Config(**values)
    if cfg.gpu_replay is not None and cfg.gpu_source == "none":
        raise ConfigError("--gpu-replay conflicts with --gpu-source none")
    if cfg.gpu_source == "dcgm" and not cfg.dcgm_url and cfg.gpu_replay is None:
        raise ConfigError("--gpu-source dcgm needs --dcgm-url (the node's dcgm-exporter /metrics)")
    return cfg
