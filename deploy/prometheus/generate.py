"""Prometheus rules as code: ``python deploy/prometheus/generate.py`` writes ``rules.yaml`` beside
it and the Helm chart's PrometheusRule template from one definition.

Both outputs come from :func:`groups`, called with the settings' values (``rules.yaml``: the
defaults) or with placeholders the chart fills from its values (the cluster label, the latency
objective, the minimum traffic, the thresholds), so the file promtool tests and the rules a release
installs cannot drift apart; tests check both are current, and that the chart rendered with any
values equals :func:`render` with the same settings. Standard library and PyYAML only.

Every join and every aggregation carries the cluster label (``cluster`` unless set): under one
Thanos or Mimir, instance and job values repeat across clusters. Per-server alerts join on
(cluster, instance, job); service-level alerts (latency objectives, request errors, rollouts) are
evaluated per (cluster, namespace, model), as the SRE workbook measures a service, with a
minimum-traffic guard.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from exporter.derive import thresholds as T

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RULES = HERE / "rules.yaml"
CHART_TEMPLATE = ROOT / "deploy" / "helm" / "vllm-profile-exporter" / "templates" / (
    "prometheusrule.yaml"
)
DOCS = "https://github.com/vllm-profile-exporter/vllm-profile-exporter/blob/main/"
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True, slots=True)
class Settings:
    """What an operator tunes, each a value of the chart's ``prometheusRule`` (its name there)."""

    cluster_label: str = "cluster"  # clusterLabel
    slo_objective: float = 0.99  # slo.objective: the share of requests meeting --slo-ttft/tpot
    slo_min_requests: int = 100  # slo.minRequests: in an alert's long window, else no page
    queue_time_seconds: float = 1.0  # thresholds.queueTimeSeconds
    request_error_ratio: float = 0.01  # thresholds.requestErrorRatio
    request_min_requests: int = 20  # thresholds.requestMinRequests: finished in 10 minutes
    rollout_min_samples: int = 15  # rollout.minSamples: evaluations on each side of a rollout
    runbook_base_url: str = DOCS  # runbookBaseUrl

    def __post_init__(self) -> None:
        if not LABEL_NAME.fullmatch(self.cluster_label):
            raise ValueError(f"not a Prometheus label name: {self.cluster_label!r}")
        if not 0 < self.slo_objective < 1:
            raise ValueError("the objective is a share between 0 and 1")


# Each setting's path under the chart's .Values.prometheusRule.
CHART_VALUES = {
    "cluster_label": "clusterLabel",
    "slo_objective": "slo.objective",
    "slo_min_requests": "slo.minRequests",
    "queue_time_seconds": "thresholds.queueTimeSeconds",
    "request_error_ratio": "thresholds.requestErrorRatio",
    "request_min_requests": "thresholds.requestMinRequests",
    "rollout_min_samples": "rollout.minSamples",
    "runbook_base_url": "runbookBaseUrl",
}


class P:
    """The settings as text: their values, or the chart's placeholders (``@@name@@``)."""

    def __init__(self, s: Settings | None) -> None:
        for f in fields(Settings):
            value = f"@@{f.name}@@" if s is None else getattr(s, f.name)
            setattr(self, f.name, f"{value:g}" if isinstance(value, float) else str(value))

    cluster_label: str
    slo_objective: str
    slo_min_requests: str
    queue_time_seconds: str
    request_error_ratio: str
    request_min_requests: str
    rollout_min_samples: str
    runbook_base_url: str


def _who(p: P, per_server: bool = True) -> str:
    """Who an alert is about, first in its summary: the cluster (when labelled), the namespace and
    pod (else the instance) and the model, from vllm_profile_info up to an hour back so that an
    exporter that is down is still named; a model not yet known prints nothing."""
    c = p.cluster_label
    cluster = f"{{{{ with $labels.{c} }}}}{{{{ . }}}}/{{{{ end }}}}"
    if not per_server:
        return (
            cluster + "{{ with $labels.namespace }}{{ . }}/{{ end }}{{ $labels.model }}"
        )
    return (
        cluster
        + "{{ if $labels.pod }}{{ $labels.namespace }}/{{ $labels.pod }}{{ else }}"
        "{{ $labels.instance }}{{ end }}"
        f'{{{{ with printf "last_over_time(vllm_profile_info{{{c}=%q,instance=%q,job=%q,'
        f'model!=\\"\\"}}[1h])" $labels.{c} $labels.instance $labels.job | query }}}}'
        ' ({{ . | first | label "model" }}){{ end }}'
    )


R3, R5, SOURCE = 'rule=\\"R3\\"', 'rule=\\"R5\\"', 'source=\\"%s\\"'


def _q(p: P, selector: str) -> str:
    """``printf`` arguments that select a metric of the alert's own target."""
    c = p.cluster_label
    sep = "," if selector else ""
    return f'{selector}{sep}{c}=\\"%s\\",instance=\\"%s\\",job=\\"%s\\"'


def _args(p: P) -> str:
    return f"$labels.{p.cluster_label} $labels.instance $labels.job"


def _value(p: P, metric: str, selector: str = "", fmt: str = "humanizePercentage",
           fallback: str = "") -> str:  # fmt: skip
    """A template that prints one metric of the alert's target, formatted."""
    head = f'{{{{ with printf "{metric}{{{_q(p, selector)}}}" {_args(p)} | query }}}}'
    return head + f"{{{{ . | first | value | {fmt} }}}}{fallback}{{{{ end }}}}"


def _alert(p: P, name: str, expr: str, severity: str, summary: str, description: str,
           anchor: str, for_: str | None = None, keep: str | None = None,
           per_server: bool = True) -> dict[str, Any]:  # fmt: skip
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    if keep:
        rule["keep_firing_for"] = keep
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {
        "summary": f"{_who(p, per_server)}: {summary}" if summary[0] != "!" else summary[1:],
        "description": description,
        "runbook_url": f"{p.runbook_base_url}{anchor}",
    }
    return rule


def _on(p: P, *more: str) -> str:
    return "on (" + ", ".join((p.cluster_label, "instance", "job", *more)) + ")"


def _by(p: P) -> str:
    return f"by ({p.cluster_label}, namespace, model)"


def _with_model(p: P, vector: str) -> str:
    """Each exporter's series with the model it serves, from vllm_profile_info."""
    return (
        f"{vector}\n  * {_on(p)} group_left (model)\n"
        f"    max by ({p.cluster_label}, instance, job, model) (vllm_profile_info)"
    )


def _service_sum(p: P, vector: str) -> str:
    return f"sum {_by(p)} (\n{_indent(_with_model(p, vector), 2)}\n)"


def _bottlenecks(p: P) -> list[dict[str, Any]]:
    docs = "docs/rules.md#"
    t = "$labels.instance"
    return [
        _alert(
            p, "VLLMProfileUnderBatching", 'vllm_profile_rule_significant{rule="R1"} == 1',
            "info", "vLLM runs far below its scheduler capacity.",
            f"{{{{ {t} }}}}: under-batching in "
            + _value(p, "vllm_profile_rule_score_ratio", 'rule=\\"R1\\"')
            + " of recent windows; scheduler occupancy "
            + _value(p, "vllm_profile_scheduler_occupancy_ratio")
            + ". Fix: raise client concurrency (more parallel requests).",
            docs + "r1", "5m", "2m",
        ),
        _alert(
            p, "VLLMProfileKVCachePressure", 'vllm_profile_rule_significant{rule="R2"} == 1',
            "warning", "vLLM's KV cache is under pressure.",
            f"{{{{ {t} }}}}: KV cache pressure ({{{{ $labels.variant }}}} path) in "
            + '{{ with printf "vllm_profile_rule_score_ratio{rule=\\"R2\\",variant=\\"%s\\",'
            + f'{_q(p, "")}}}" $labels.variant {_args(p)} | query }}}}'
            + "{{ . | first | value | humanizePercentage }}{{ end }}"
            + " of recent windows; KV peak "
            + _value(p, "vllm_profile_kv_cache_usage_peak_ratio")
            + ", "
            + _value(p, "vllm_profile_preemptions_per_second", fmt='printf "%.2f"')
            + " preemptions/s. Fix: {{ if eq $labels.variant \"backlog\" }}expand the KV pool "
            "(raise --gpu-memory-utilization if VRAM headroom exists, use an fp8 KV cache, or "
            "reduce --max-model-len){{ else }}reduce --max-num-seqs or --max-model-len{{ end }}.",
            docs + "r2", "2m", "2m",
        ),
        _alert(
            p, "VLLMProfileLowPrefixReuse", 'vllm_profile_rule_significant{rule="R3"} == 1',
            "info", "Prompts reuse little of vLLM's prefix cache.",
            f"{{{{ {t} }}}}: prefix-cache hit ratio "
            + _value(p, "vllm_profile_prefix_cache_hit_ratio",
                     fallback="{{ else }}0 (prefix caching disabled)")
            + " at "
            + _value(p, "vllm_profile_requests_per_second", fmt='printf "%.1f"')
            + " req/s. Fix: "
            + f'{{{{ with printf "vllm_profile_issue_info{{{_q(p, R3)}}}" '
            + f"{_args(p)} | query }}}}"
            + '{{ if eq (. | first).Labels.fix "enable_prefix_caching" }}enable '
            "--enable-prefix-caching, then restructure prompts to share a prefix.{{ else }}move "
            "shared instructions to the start of prompts and standardize templates.{{ end }}"
            "{{ else }}move shared instructions to the start of prompts and standardize templates "
            "(enable --enable-prefix-caching if it is off).{{ end }}",
            docs + "r3", "10m", "5m",
        ),
        _alert(
            p, "VLLMProfileOOMRisk", 'vllm_profile_rule_significant{rule="R4"} == 1',
            "warning", "The model's weights do not fit the GPUs' usable memory.",
            f"{{{{ {t} }}}}: the per-GPU KV headroom is "
            + f'{{{{ with printf "min(vllm_profile_kv_headroom_bytes{{{_q(p, "")}}})" '
            + f"{_args(p)} | query }}}}"
            + "{{ . | first | value | humanize1024 }}B{{ end }}"
            + " (weights / (tensor x pipeline parallel size) exceed memory x "
            "gpu_memory_utilization). Fix: raise --tensor-parallel-size, or use a "
            "lower-precision weight format.",
            docs + "r4", "1m",
        ),
        _alert(
            p, "VLLMProfileConcurrencySaturation",
            'vllm_profile_rule_significant{rule="R5"} == 1',
            "warning", "vLLM's scheduler is at its cap and a queue is building.",
            f"{{{{ {t} }}}}: at --max-num-seqs with "
            + _value(p, "vllm_profile_requests_waiting", fmt='printf "%.1f"')
            + " requests waiting; KV peak "
            + _value(p, "vllm_profile_kv_cache_usage_peak_ratio")
            + ". Fix: "
            + f'{{{{ with printf "vllm_profile_issue_info{{{_q(p, R5)}}}" '
            + f"{_args(p)} | query }}}}"
            + '{{ if eq (. | first).Labels.fix "raise_max_num_seqs" }}raise --max-num-seqs (the '
            "KV peak leaves room).{{ else }}add a replica or lower --max-model-len: raising "
            "--max-num-seqs would thrash the KV cache.{{ end }}{{ else }}raise --max-num-seqs "
            "if the KV peak is below 80%, else add a replica or lower --max-model-len.{{ end }}",
            docs + "r5", "5m", "2m",
        ),
        _alert(
            p, "VLLMProfileWorseAfterChange",
            # A restart that kept its configuration (a crash, an eviction) is no change to blame.
            'vllm_profile_direction{direction="worse"} == 1\n'
            f"  and {_on(p)} changes(vllm_profile_config_epoch[2h]) > 0\n"
            f"  unless {_on(p)} "
            'vllm_profile_config_epoch_info{cause="engine_restart_same_config"}',
            "warning", "A configuration change made vLLM worse.",
            f"{{{{ {t} }}}}: after the latest change (epoch "
            + _value(p, "vllm_profile_config_epoch", fmt="printf \"%.0f\"")
            + ") "
            + f'{{{{ with printf "vllm_profile_efficiency_delta_ratio{{{_q(p, "")}}}" '
            + f"{_args(p)} | query }}}}"
            + "efficiency per running request changed by {{ . | first | value | "
            "humanizePercentage }} (judged against the roofline){{ else }}throughput changed by "
            + _value(p, "vllm_profile_throughput_delta_ratio", fallback="{{ else }}n/a")
            + " (judged by throughput: no roofline for this model or GPU){{ end }} against the "
            "horizon before it. Revert the change, or accept the new baseline.",
            docs + "direction",
        ),
        _alert(
            p, "VLLMProfileSustainedPreemptions",
            "min_over_time(vllm_profile_preemptions_per_second[10m]) > 0",
            "warning", "vLLM has been preempting requests for ten minutes.",
            f"{{{{ {t} }}}}: at least {{{{ $value | printf \"%.2f\" }}}} preemptions/s "
            "throughout the last 10 minutes: the KV cache cannot hold the running requests.",
            docs + "r2", "5m",
        ),
        _alert(
            p, "VLLMProfileLongQueueTime",
            f"min_over_time(vllm_profile_queue_time_mean_seconds[10m]) > {p.queue_time_seconds}",
            "warning",
            f"Requests wait over {{{{ {p.queue_time_seconds} | humanizeDuration }}}} in vLLM's "
            "queue.",
            f"{{{{ {t} }}}}: requests waited {{{{ $value | humanizeDuration }}}} on average (the "
            "least over the last 10 minutes) before vLLM scheduled them; "
            + _value(p, "vllm_profile_requests_waiting", fmt='printf "%.1f"')
            + " waiting. Fix: raise --max-num-seqs where the KV cache has headroom, else add "
            "replicas.",
            "docs/operations.md#queue-time", "5m",
        ),
    ]


def _health(p: P) -> list[dict[str, Any]]:
    ops = "docs/operations.md#"
    t = "$labels.instance"
    return [
        _alert(
            p, "VLLMProfileExporterDown",
            f"(up == 0) and {_on(p)} max_over_time(vllm_profile_info[1h])",
            "warning", "The exporter does not answer Prometheus.",
            f"{{{{ {t} }}}} (job {{{{ $labels.job }}}}) has failed every scrape for 5 minutes; "
            "its vLLM is no longer profiled.",
            ops + "exporter-down", "5m",
        ),
        _alert(
            p, "VLLMProfileExporterAbsent", "absent_over_time(vllm_profile_up[15m])",
            "warning", "!No vllm-profile-exporter series reach Prometheus.",
            "No vllm_profile_up series for 15 minutes: no exporter is scraped (check the "
            "ServiceMonitor or PodMonitor and the exporter's pods).",
            ops + "exporter-down",
        ),
        _alert(
            p, "VLLMProfileVLLMUnreachable",
            # Only a vLLM that has answered this exporter once: a model loading for minutes
            # after a cold start is not down (its pod is not Ready; Kubernetes says so).
            'vllm_profile_up{source="vllm"} == 0\n'
            f'  and {_on(p)} vllm_profile_last_poll_timestamp_seconds{{source="vllm"}}',
            "warning", "The exporter cannot read vLLM's /metrics.",
            f"{{{{ {t} }}}}: vLLM answered this exporter before and has not for 2 minutes: every "
            "vLLM-derived figure is absent.",
            ops + "vllm-unreachable", "2m",
        ),
        _alert(
            p, "VLLMProfileGPUSourceDown", 'vllm_profile_up{source=~"nvml|dcgm"} == 0',
            "warning", "The exporter has no GPU readings.",
            f"{{{{ {t} }}}}: the {{{{ $labels.source }}}} source has failed for 10 minutes; "
            "power, energy, VRAM and the roofline are absent.",
            ops + "gpu-source-down", "10m",
        ),
        _alert(
            p, "VLLMProfileStalePolls",
            # Stale against the source's own cadence (dcgm-exporter refreshes every 30 s by
            # default, vLLM is polled every second): three intervals, plus two minutes for the
            # scrape interval and the evaluation that read the age.
            "(time() - vllm_profile_last_poll_timestamp_seconds)\n"
            f"  > {_on(p, 'source')} (3 * (vllm_profile_poll_interval_seconds\n"
            "      or vllm_profile_poll_schedule_seconds) + 120)\n"
            f"  and {_on(p, 'source')} (vllm_profile_up == 1)",
            "warning", "The exporter's figures have stopped changing.",
            f"{{{{ {t} }}}}: the last successful {{{{ $labels.source }}}} poll is "
            "{{ $value | humanizeDuration }} old although the source reported up and is polled "
            "every "
            + f'{{{{ with printf "vllm_profile_poll_interval_seconds{{{_q(p, SOURCE)}}}" '
            + f"$labels.source {_args(p)} | query }}}}"
            + "{{ . | first | value | humanizeDuration }}{{ end }}; the figures are frozen.",
            ops + "stale-polls", "2m",
        ),
    ]


WINDOWS = ("5m", "30m", "1h", "6h", "3d")
# (long window, short window, burn factor, for, severity, alert suffix, what it means)
TIERS = (
    ("1h", "5m", 14.4, "2m", "critical", "FastBurn",
     "fast enough to spend the month's error budget in two days"),
    ("6h", "30m", 6.0, "15m", "warning", "SlowBurn",
     "steadily; the month's error budget will not last"),
    ("3d", "6h", 1.0, "1h", "warning", "LongBurn",
     "for three days at the rate that spends the whole month's budget: a ticket, not a page"),
)  # fmt: skip


def _slo(p: P) -> list[dict[str, Any]]:
    """Per (cluster, namespace, model): every pod of a service counts, as users see it."""
    out: list[dict[str, Any]] = []
    for kind in ("ttft", "tpot"):
        total, good = f"vllm_profile_slo_{kind}_requests_total", (
            f"vllm_profile_slo_{kind}_good_requests_total"
        )
        for w in WINDOWS:
            out.append({
                "record": f"cluster_namespace_model:vllm_profile_slo_{kind}_errors:ratio_rate{w}",
                "expr": "1 - (\n" + _indent(_service_sum(p, f"rate({good}[{w}])"), 2)
                + "\n  /\n" + _indent(_service_sum(p, f"rate({total}[{w}])"), 2) + "\n)",
            })  # fmt: skip
        for long in ("1h", "6h", "3d"):
            out.append({
                "record": f"cluster_namespace_model:vllm_profile_slo_{kind}_requests:increase"
                f"{long}",
                "expr": _service_sum(p, f"increase({total}[{long}])"),
            })  # fmt: skip
    name = {"ttft": "TTFT", "tpot": "TPOT"}
    words = {"ttft": "time to first token", "tpot": "time per output token"}
    for kind in ("ttft", "tpot"):
        for long, short, factor, for_, severity, suffix, meaning in TIERS:
            level = f"cluster_namespace_model:vllm_profile_slo_{kind}"
            budget = f"({factor:g} * (1 - {p.slo_objective}))"
            out.append(_alert(
                p, f"VLLMProfile{name[kind]}Budget{suffix}",
                f"{level}_errors:ratio_rate{long} > {budget}\n"
                f"and\n{level}_errors:ratio_rate{short} > {budget}\n"
                f"and\n{level}_requests:increase{long} >= {p.slo_min_requests}",
                severity, f"Requests miss the {name[kind]} objective {meaning}.",
                f"{{{{ $value | humanizePercentage }}}} of the requests of the last {long} "
                f"(and of the last {short}) missed the {words[kind]} objective, across every "
                "server of this model in this namespace, against an objective of "
                f"{{{{ {p.slo_objective} | humanizePercentage }}}} of requests.",
                "docs/operations.md#slo-burn", for_, per_server=False,
            ))  # fmt: skip
    finished = "vllm_profile_observed_finished_requests_total"
    out.append(_alert(
        p, "VLLMProfileRequestErrors",
        "(\n"
        + _indent(_service_sum(p, f'rate({finished}{{finished_reason="error"}}[10m])'), 2)
        + "\n  /\n"
        + _indent(_service_sum(p, f"rate({finished}[10m])"), 2)
        + f"\n) > {p.request_error_ratio}\nand\n"
        + _service_sum(p, f"increase({finished}[10m])")
        + f" >= {p.request_min_requests}",
        "critical", "vLLM ends requests with errors.",
        "{{ $value | humanizePercentage }} of the requests this model's servers in this "
        "namespace finished over the last 10 minutes ended with an error "
        '(finished_reason="error"). Look at vLLM\'s log.',
        "docs/operations.md#request-errors", "5m", per_server=False,
    ))  # fmt: skip
    return out


def _fleet(p: P) -> list[dict[str, Any]]:
    lvl, gpu_lvl = "cluster_namespace_model:", "cluster_namespace_model_gpu:"
    by_gpu = f"by ({p.cluster_label}, namespace, model, gpu_name)"
    on = _on(p)
    return [
        {
            # The fleet's tokens/s over every observed second, idle ones included (summing each
            # server's active-window rate would overstate it when duty cycles are below 1).
            "record": f"{lvl}vllm_profile_generation_tokens:rate5m",
            "expr": _service_sum(p, "rate(vllm_profile_observed_generation_tokens_total[5m])"),
        },
        {
            "record": f"{lvl}vllm_profile_cost_per_hour_dollars:sum",
            "expr": _service_sum(p, "vllm_profile_cost_per_hour_dollars"),
        },
        {
            # Wall clock: idle capacity counts, and an idle server's whole cost.
            "record": f"{lvl}vllm_profile_recoverable_cost_per_hour_dollars:sum",
            "expr": _service_sum(p, "vllm_profile_wall_clock_recoverable_cost_per_hour_dollars"),
        },
        {
            # While busy: the busy servers' cost over their active tokens/s (an idle server's
            # cost is in the wall-clock price, not here). No tokens: absent, never +Inf.
            "record": f"{lvl}vllm_profile_active_cost_per_million_tokens_dollars:ratio",
            "expr": _service_sum(
                p, f"(vllm_profile_cost_per_hour_dollars\n   and {on} "
                "(vllm_profile_generation_tokens_per_second > 0))"
            ) + "\n/ (\n"
            + _indent(_service_sum(p, "vllm_profile_generation_tokens_per_second"), 2)
            + "\n  * 3600 > 0\n) * 1e6",
        },
        {
            # What the tokens of the last hour really cost: dollars accrued over every observed
            # second, busy or idle, over the tokens generated in them.
            "record": f"{lvl}vllm_profile_wall_clock_cost_per_million_tokens_dollars:ratio1h",
            "expr": _service_sum(
                p, "sum without (price_source) "
                "(increase(vllm_profile_observed_cost_dollars_total[1h]))"
            ) + "\n/ (\n"
            + _indent(_service_sum(
                p, "increase(vllm_profile_observed_generation_tokens_total[1h])"), 2)
            + " > 0\n) * 1e6",
        },
        {
            # Capacity (docs/capacity.md): the load a model's servers finish, and per GPU kind
            # the weakest replica's lower bound (a replica withholding drops out of the min).
            "record": f"{lvl}vllm_profile_capacity_load_requests_per_second:sum",
            "expr": _service_sum(p, "vllm_profile_capacity_load_requests_per_second"),
        },
        {
            "record": f"{gpu_lvl}vllm_profile_capacity_lower_requests_per_second:min",
            "expr": f"min {by_gpu} (\n"
            f"  vllm_profile_capacity_lower_requests_per_second\n  * {on} group_left (model, "
            f"gpu_name)\n    max by ({p.cluster_label}, instance, job, model, gpu_name) "
            "(vllm_profile_info)\n)",
        },
        {
            # Replicas of each GPU kind the model's whole load needs, each planned at the
            # weakest replica's lower bound.
            "record": f"{gpu_lvl}vllm_profile_replicas_needed:ceil",
            "expr": f"ceil(\n  {lvl}vllm_profile_capacity_load_requests_per_second:sum\n"
            f"  / on ({p.cluster_label}, namespace, model) group_right ()\n"
            f"  ({gpu_lvl}vllm_profile_capacity_lower_requests_per_second:min > 0)\n)",
        },
        {
            "record": f"{lvl}vllm_profile_efficiency:ratio",
            "expr": _service_sum(
                p, f"(vllm_profile_generation_tokens_per_second and {on} "
                "vllm_profile_efficiency_ratio)"
            ) + "\n/\n" + _service_sum(p, "vllm_profile_decode_hardware_ceiling_tokens_per_second"),
        },
    ]  # fmt: skip


def _rollout(p: P) -> list[dict[str, Any]]:
    """Before and after a rollout, per (cluster, namespace, model), by configuration identity
    (vllm_profile_info{config_id}): the servers of a configuration gone in the last two hours
    against those of the configuration serving now. A new pod with the configuration of the one
    it replaces (a crash, an eviction, a node drain) changes nothing here. The signals and
    thresholds are the exporter's own direction's (docs/rules.md#direction)."""
    c = p.cluster_label
    cfg = f"{c}, namespace, model, config_id"
    lvl, svc = "cluster_namespace_model_config:vllm_profile_", "cluster_namespace_model:"
    info = f"max by ({c}, instance, job, model, config_id) (vllm_profile_info{{config_id!=\"\"}})"

    def per_config(vector: str) -> str:
        return (f"avg by ({cfg}) (\n  {vector}\n    * {_on(p)} group_left (model, config_id)\n"
                f"      {info}\n)")  # fmt: skip

    def sides(name: str) -> list[dict[str, Any]]:
        x = f"{lvl}{name}:avg"
        enough = f"(avg_over_time({x}[2h]) and count_over_time({x}[2h]) >= {p.rollout_min_samples})"
        return [
            {"record": f"{lvl}{name}:before_rollout",
             "expr": f"{enough}\n  unless on ({cfg}) {lvl}info:count"},
            {"record": f"{lvl}{name}:after_rollout",
             "expr": f"{enough}\n  and on ({cfg}) {lvl}info:count"},
        ]  # fmt: skip

    eff = f"{svc}vllm_profile_rollout_efficiency_per_request_pp:delta"
    tps = f"{svc}vllm_profile_rollout_generation_tokens_per_second:ratio_change"
    by = _by(p)

    def verdict(word: str, on_eff: str, on_tps: str) -> str:
        return (f'label_replace({eff} {on_eff}, "direction", "{word}", "", "")\n'
                f'or label_replace(({tps} {on_tps}) unless on ({c}, namespace, model) {eff}, '
                f'"direction", "{word}", "", "")')  # fmt: skip

    better_pp, worse_pp = f"{T.BETTER_EFFICIENCY_PP:g}", f"{T.WORSE_EFFICIENCY_PP:g}"
    better_t, worse_t = (f"{T.BETTER_THROUGHPUT_PCT / 100:g}", f"{T.WORSE_THROUGHPUT_PCT / 100:g}")
    return [
        {"record": f"{lvl}info:count",
         "expr": f'count by ({cfg}) (vllm_profile_info{{config_id!=""}})'},
        {"record": f"{lvl}efficiency_per_request_pp:avg",
         "expr": per_config(
             "100 * vllm_profile_efficiency_ratio / (vllm_profile_requests_running > 0)")},
        {"record": f"{lvl}generation_tokens_per_second:avg",
         "expr": per_config("vllm_profile_generation_tokens_per_second")},
        *sides("efficiency_per_request_pp"),
        *sides("generation_tokens_per_second"),
        {"record": eff,
         "expr": f"avg {by} ({lvl}efficiency_per_request_pp:after_rollout)\n"
                 f"- avg {by} ({lvl}efficiency_per_request_pp:before_rollout)"},
        {"record": tps,
         "expr": f"avg {by} ({lvl}generation_tokens_per_second:after_rollout)\n"
                 f"/ avg {by} ({lvl}generation_tokens_per_second:before_rollout > 0) - 1"},
        {"record": f"{svc}vllm_profile_rollout_direction:verdict",
         "expr": "(\n"
         + _indent(verdict("better", f"> {better_pp}", f"> {better_t}"), 2) + "\n  or\n"
         + _indent(verdict("worse", f"< {worse_pp}", f"< {worse_t}"), 2) + "\n  or\n"
         + _indent(verdict("plateau", f"<= {better_pp} >= {worse_pp}",
                           f"<= {better_t} >= {worse_t}"), 2)
         + "\n) * 0 + 1"},
        _alert(
            p, "VLLMProfileWorseAfterRollout",
            f'{svc}vllm_profile_rollout_direction:verdict{{direction="worse"}} == 1',
            "warning", "A rollout made this model's servers worse.",
            "The servers of the configuration now serving run worse than those of the one it "
            "replaced (the last two hours of each): "
            + f'{{{{ with printf "{eff}{{{c}=\\"%s\\",namespace=\\"%s\\",model=\\"%s\\"}}" '
            + f"$labels.{c} $labels.namespace $labels.model | query }}}}"
            + "efficiency per running request changed by {{ . | first | value | printf \"%.1f\" "
            "}} percentage points{{ else }}"
            + f'{{{{ with printf "{tps}{{{c}=\\"%s\\",namespace=\\"%s\\",model=\\"%s\\"}}" '
            + f"$labels.{c} $labels.namespace $labels.model | query }}}}"
            + "throughput per server changed by {{ . | first | value | humanizePercentage }}"
            "{{ end }}{{ end }}. Roll back, or accept the new baseline.",
            "docs/rules.md#rollout", per_server=False,
        ),
    ]  # fmt: skip


GROUPS = (
    ("vllm-profile-bottlenecks", _bottlenecks),
    ("vllm-profile-exporter-health", _health),
    ("vllm-profile-slo", _slo),
    ("vllm-profile-fleet", _fleet),
    ("vllm-profile-rollout", _rollout),
)


def groups(s: Settings | None) -> list[dict[str, Any]]:
    """Every rule group; ``None``: with the chart's placeholders."""
    p = P(s)

    def whole_lines(rule: dict[str, Any]) -> dict[str, Any]:
        # A multi-line expression ends with a newline, as YAML's literal block reads it back.
        return {k: v + "\n" if isinstance(v, str) and "\n" in v and not v.endswith("\n") else v
                for k, v in rule.items()}  # fmt: skip

    return [{"name": name, "rules": [whole_lines(r) for r in build(p)]} for name, build in GROUPS]


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data.rstrip("\n") + "\n",
                                       style="|")  # fmt: skip
    if len(data) > 80 and " " in data:  # annotations: folded, a line of words each
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=">")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


HEADER = """\
# Prometheus alerting and recording rules for vllm-profile-exporter.
#
# Generated by deploy/prometheus/generate.py (edit that, then run it); tests check it is current.
# The Helm chart's PrometheusRule comes from the same definition with the objective, thresholds
# and cluster label as values. Runbook links point at docs/.
"""


def render(s: Settings) -> str:
    """``rules.yaml`` for these settings."""
    return HEADER + _dump({"groups": groups(s)})


def _helm_text(text: str) -> str:
    """Prometheus' own templates kept verbatim through Helm, then the placeholders as values."""
    text = text.replace("{{", "\0L").replace("}}", "\0R")
    text = text.replace("\0L", '{{ "{{" }}').replace("\0R", '{{ "}}" }}')
    text = text.replace("{@@", '{{ "{" }}@@')  # a literal brace may not touch Helm's "{{"
    for name, path in CHART_VALUES.items():
        text = text.replace(f"@@{name}@@", f"{{{{ $v.{path} }}}}")
    assert "@@" not in text, text
    return text


def _indent(text: str, n: int) -> str:
    pad = " " * n
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


def chart_template() -> str:
    """The chart's PrometheusRule: each group and alert can be disabled, extra labels go on every
    alert, the settings come from ``.Values.prometheusRule``."""
    out = [
        "{{- /* Generated by deploy/prometheus/generate.py from the definition rules.yaml is",
        "       rendered from: edit that, then run it. */}}",
        "{{- if and .Values.prometheusRule.enabled (include "
        '"vllm-profile-exporter.monitoringApi" .) }}',
        "{{- $v := .Values.prometheusRule }}",
        "apiVersion: monitoring.coreos.com/v1",
        "kind: PrometheusRule",
        "metadata:",
        '  name: {{ include "vllm-profile-exporter.fullname" . }}',
        "  namespace: {{ $v.namespace | default .Release.Namespace }}",
        "  labels:",
        '    {{- include "vllm-profile-exporter.labels" . | nindent 4 }}',
        "    {{- with $v.additionalLabels }}",
        "    {{- toYaml . | nindent 4 }}",
        "    {{- end }}",
        "spec:",
        "  groups:",
    ]
    for name, rules in ((g["name"], g["rules"]) for g in groups(None)):
        # Recording rules once per Prometheus: a second release sets recordingRules false (a
        # group of records alone is then left out whole).
        only_records = all("record" in r for r in rules)
        cond = f'not (has "{name}" $v.disabledGroups)'
        out.append(f"  {{{{- if and ({cond}) $v.recordingRules }}}}" if only_records
                   else f"  {{{{- if {cond} }}}}")  # fmt: skip
        out.append(f"  - name: {name}")
        out.append("    rules:")
        for rule in rules:
            body = _indent(_helm_text(_dump([rule])), 4)
            if "alert" in rule:
                body = body.replace(
                    "\n        severity:",
                    "\n        {{- with $v.extraLabels }}\n        {{- toYaml . | nindent 8 }}\n"
                    "        {{- end }}\n        severity:",
                    1,
                )
                out.append(f'    {{{{- if not (has "{rule["alert"]}" $v.disabledAlerts) }}}}')
            elif not only_records:
                out.append("    {{- if $v.recordingRules }}")
            out.append(body.rstrip("\n"))
            if "alert" in rule or not only_records:
                out.append("    {{- end }}")
        out.append("  {{- end }}")
    out.append("{{- end }}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if an output is not current")
    args = ap.parse_args(argv)
    outputs = {RULES: render(Settings()), CHART_TEMPLATE: chart_template()}
    stale = [p for p, text in outputs.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is not current: run {Path(__file__).name}")
        return 1 if stale else 0
    for path, text in outputs.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
