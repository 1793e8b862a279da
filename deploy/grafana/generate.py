"""Grafana dashboards as code: ``python deploy/grafana/generate.py`` writes the JSON beside it.

The committed JSON is the build output (tests check it matches this file). Plain classic
dashboard JSON, schemaVersion 39 (Grafana 10-13 load it); no dependency beyond the standard
library.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
# The label that tells clusters apart under one Thanos or Mimir: a hidden constant variable, so a
# deployment that names it otherwise changes one value (the Helm chart sets it from
# prometheusRule.clusterLabel).
CLUSTER_LABEL = "cluster"
CL = "${cluster_label}"
# Every per-server query's selector. namespace and pod are the labels prometheus-operator puts on
# every target; outside Kubernetes they are absent, and the variables' ".*" matches that too, as
# it matches a Prometheus without a cluster label.
SEL = f'{CL}=~"$cluster",namespace=~"$namespace",pod=~"$pod",instance=~"$instance"'


def variables(per_server: bool) -> list[dict[str, Any]]:
    def query_var(name: str, label: str, query: str, multi: bool,
                  all_value: str | None) -> dict[str, Any]:  # fmt: skip
        return {
            "name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
            "refresh": 2, "includeAll": multi, "multi": multi, "allValue": all_value,
            "sort": 1, "current": {},
        }  # fmt: skip

    info = "vllm_profile_info"
    c = f'{CL}=~"$cluster"'
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        },  # fmt: skip
        {"name": "cluster_label", "type": "constant", "query": CLUSTER_LABEL, "hide": 2,
         "current": {"text": CLUSTER_LABEL, "value": CLUSTER_LABEL},
         "options": [{"text": CLUSTER_LABEL, "value": CLUSTER_LABEL, "selected": True}]},
        query_var("cluster", "Cluster", f"label_values({info}, {CL})", True, ".*"),
        query_var("namespace", "Namespace", f"label_values({info}{{{c}}}, namespace)", True, ".*"),
        query_var(
            "model", "Model", f'label_values({info}{{{c},namespace=~"$namespace"}}, model)', True,
            ".*",
        ),  # fmt: skip
        query_var(
            "pod",
            "Pod",
            f'label_values({info}{{{c},namespace=~"$namespace",model=~"$model"}}, pod)',
            True,
            ".*",
        ),  # fmt: skip
        # "All" is the listed instances (no allValue), so the model chosen reaches every panel
        # through them, whatever labels the panel's own series carry.
        query_var(
            "instance",
            "Instance",
            f'label_values({info}{{{c},namespace=~"$namespace",model=~"$model",pod=~"$pod"}}, '
            "instance)",
            not per_server,
            None,
        ),  # fmt: skip
    ]


class Board:
    """Panels, then their layout: rows of 24 columns, in titled groups (``layout``)."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[dict[str, Any], int, int]] = {}
        self.panels: list[dict[str, Any]] = []
        self.x = self.y = self.row_h = 0

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        assert panel["title"] not in self.pending, panel["title"]
        self.pending[panel["title"]] = (panel, w, h)

    def layout(self, groups: list[tuple[str | None, list[str]]]) -> list[dict[str, Any]]:
        """Each group under a row titled so (None: no row), its panels in the order given;
        every panel added must be placed exactly once."""
        placed = [t for _, titles in groups for t in titles]
        assert sorted(placed) == sorted(self.pending), set(placed) ^ set(self.pending)
        for title, titles in groups:
            if title is not None:
                self._row(title)
            for t in titles:
                self._place(*self.pending[t])
        return self.panels

    def _row(self, title: str) -> None:
        self.y, self.x, self.row_h = self.y + self.row_h, 0, 0
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "id": len(self.panels) + 1,
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}})  # fmt: skip
        self.y += 1

    def _place(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        panel["id"] = len(self.panels) + 1
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False,
           fmt: str = "time_series") -> dict[str, Any]:  # fmt: skip
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref,
            "instant": instant, "range": not instant, "format": fmt}  # fmt: skip


def panel(kind: str, title: str, description: str, unit: str, targets: list[dict[str, Any]],
          **extra: Any) -> dict[str, Any]:  # fmt: skip
    p: dict[str, Any] = {
        "type": kind, "title": title, "description": description, "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }  # fmt: skip
    p.update(extra)
    return p


def stat(title: str, description: str, unit: str, expr: str, legend: str = "") -> dict[str, Any]:
    return panel("stat", title, description, unit, [target(expr, legend)],
                 options={"reduceOptions": {"calcs": ["lastNotNull"]}, "graphMode": "area"})  # fmt: skip


def series(title: str, description: str, unit: str, *exprs: tuple[str, str]) -> dict[str, Any]:
    refs = "ABCDEFGH"
    return panel("timeseries", title, description, unit,
                 [target(e, legend, refs[i]) for i, (e, legend) in enumerate(exprs)])  # fmt: skip


def overview() -> dict[str, Any]:
    b = Board()
    h = "over the exporter's horizon (vllm_profile_horizon_seconds) of active windows"
    b.add(
        stat(
            "Efficiency (est)",
            "Generated tokens/s over the hardware decode ceiling from the catalog: how much "
            "of what is paid for is used. Calibrated for decode-bound work.",
            "percentunit",
            f"vllm_profile_efficiency_ratio{{{SEL}}}",
            "{{instance}}",
        ),
        6,
        5,
    )
    b.add(
        stat(
            "Recoverable cost (est)",
            "Cost per hour x (1 - duty cycle x efficiency): what the unused ceiling and the idle "
            "hours cost; an idle server's whole cost.",
            "currencyUSD",
            f"vllm_profile_wall_clock_recoverable_cost_per_hour_dollars{{{SEL}}}",
            "{{instance}}",
        ),
        6,
        5,
    )
    b.add(
        stat(
            "Cost per 1M tokens",
            "Dollars per million generated tokens counting every observed second, busy or "
            "idle: what the tokens really cost. price_source says whether the price is "
            "--cost-per-hour or the catalog's estimate.",
            "currencyUSD",
            f"vllm_profile_wall_clock_cost_per_million_tokens_dollars{{{SEL}}}",
            "{{price_source}}",
        ),
        4,
        5,
    )
    b.add(
        stat(
            "Cost per 1M tokens while busy",
            f"Dollars per million generated tokens, {h}: the marginal cost of a token while "
            "serving.",
            "currencyUSD",
            f"vllm_profile_active_cost_per_million_tokens_dollars{{{SEL}}}",
            "{{price_source}}",
        ),
        4,
        5,
    )
    b.add(
        stat(
            "Duty cycle",
            "Share of the observed time spent under load.",
            "percentunit",
            f"vllm_profile_duty_cycle_ratio{{{SEL}}}",
            "{{instance}}",
        ),
        4,
        5,
    )
    b.add(
        stat(
            "Energy per token",
            f"Joules per generated token from the GPUs' energy counters (else mean power), {h}.",
            "joule",
            f"vllm_profile_active_energy_per_token_joules{{{SEL}}}",
            "{{instance}}",
        ),
        4,
        5,
    )
    b.add(
        stat(
            "Open issues",
            "Issue groups (memory, scheduling, cache reuse) whose primary rule is significant.",
            "none",
            f"count(vllm_profile_issue_info{{{SEL}}}) or vector(0)",
        ),
        4,
        5,
    )
    b.add(series("Throughput against the ceilings",
                 "Generated tokens/s (active windows) against the decode ceilings: at the current "
                 "batch and the hardware's compute-bound maximum (catalog estimates).",
                 "short",
                 (f"vllm_profile_generation_tokens_per_second{{{SEL}}}", "generated {{instance}}"),
                 (f"vllm_profile_decode_batch_ceiling_tokens_per_second{{{SEL}}}",
                  "batch ceiling {{instance}}"),
                 (f"vllm_profile_decode_hardware_ceiling_tokens_per_second{{{SEL}}}",
                  "hardware ceiling {{instance}}")), 12, 8)  # fmt: skip
    b.add(
        series(
            "Efficiency and batch efficiency",
            "Efficiency (against the hardware ceiling) and batch efficiency (against the "
            "ceiling at the current batch): low efficiency with high batch efficiency means "
            "too little concurrency.",
            "percentunit",
            (f"vllm_profile_efficiency_ratio{{{SEL}}}", "efficiency {{instance}}"),
            (f"vllm_profile_batch_efficiency_ratio{{{SEL}}}", "batch {{instance}}"),
        ),
        12,
        8,
    )
    b.add(panel("state-timeline", "Rules firing",
                "Each rule per ~2 s window (1 = fired in the latest evaluable window).",
                "none", [target(f"vllm_profile_rule_firing{{{SEL}}}", "{{rule}} {{variant}}")]),
          12, 8)  # fmt: skip
    b.add(panel("table", "Issues and fixes",
                "Significant issue groups, their primary rule and the vLLM flag that fixes it.",
                "none",
                [target(f"vllm_profile_issue_info{{{SEL}}}", ref="A", instant=True, fmt="table")],
                transformations=[{"id": "organize", "options": {
                    "excludeByName": {"Time": True, "Value": True, "__name__": True}}}]), 12, 8)  # fmt: skip
    b.add(series("Time to first token",
                 "TTFT over active windows: p99 from merged per-window bucket deltas, and the mean.",
                 "s",
                 (f"vllm_profile_time_to_first_token_p99_seconds{{{SEL}}}", "p99 {{instance}}"),
                 (f"vllm_profile_time_to_first_token_mean_seconds{{{SEL}}}", "mean {{instance}}"),
                 (f"vllm_profile_slo_ttft_target_seconds{{{SEL}}}", "objective {{instance}}")),
          8, 8)  # fmt: skip
    b.add(series("Time per output token",
                 "TPOT over active windows (p99 and mean) on its own axis, beside the floor the "
                 "roofline allows at the current batch (estimate).",
                 "s",
                 (f"vllm_profile_time_per_output_token_p99_seconds{{{SEL}}}", "p99 {{instance}}"),
                 (f"vllm_profile_time_per_output_token_mean_seconds{{{SEL}}}", "mean {{instance}}"),
                 (f"vllm_profile_tpot_floor_seconds{{{SEL}}}", "floor (est) {{instance}}")),
          8, 8)  # fmt: skip
    b.add(series("Latency objectives met",
                 "Share of requests meeting --slo-ttft and --slo-tpot over the horizon (empty "
                 "when no objective is set).",
                 "percentunit",
                 (f"vllm_profile_slo_ttft_attainment_ratio{{{SEL}}}", "TTFT {{instance}}"),
                 (f"vllm_profile_slo_tpot_attainment_ratio{{{SEL}}}", "TPOT {{instance}}")),
          8, 8)  # fmt: skip
    b.add(series("Goodput",
                 "Generated tokens/s of requests meeting every objective (an upper bound), against "
                 "all generated tokens/s.",
                 "short",
                 (f"vllm_profile_goodput_tokens_per_second{{{SEL}}}", "goodput {{instance}}"),
                 (f"vllm_profile_generation_tokens_per_second{{{SEL}}}",
                  "generated {{instance}}")), 8, 8)  # fmt: skip
    b.add(series("Queue time",
                 "Mean time requests waited in vLLM's queue before running, over active windows: "
                 "it grows with saturation and preemptions.",
                 "s",
                 (f"vllm_profile_queue_time_mean_seconds{{{SEL}}}", "queue {{instance}}")),
          8, 8)  # fmt: skip
    b.add(series("Preemptions",
                 "vLLM preemptions per second over active windows: requests evicted for lack of "
                 "KV cache.",
                 "short",
                 (f"vllm_profile_preemptions_per_second{{{SEL}}}", "{{instance}}")), 8, 8)  # fmt: skip
    b.add(series("Scheduler occupancy",
                 "Running requests over --max-num-seqs (needs the flag): near 1 with a queue is "
                 "saturation; far below with no queue is under-batching.",
                 "percentunit",
                 (f"vllm_profile_scheduler_occupancy_ratio{{{SEL}}}", "{{instance}}")), 8, 8)  # fmt: skip
    b.add(series("GPU temperature",
                 "GPU temperature at the latest poll and its peak over the horizon.",
                 "celsius",
                 (f"vllm_profile_gpu_temperature_celsius{{{SEL}}}", "GPU {{gpu}}"),
                 (f"vllm_profile_gpu_temperature_peak_celsius{{{SEL}}}", "peak GPU {{gpu}}")),
          8, 8)  # fmt: skip
    b.add(series("Cost per 1M tokens: wall clock and while busy",
                 "Wall clock counts every observed second, busy or idle (what the tokens really "
                 "cost); while busy, only active windows (the marginal cost of a token).",
                 "currencyUSD",
                 (f"vllm_profile_wall_clock_cost_per_million_tokens_dollars{{{SEL}}}",
                  "wall clock {{instance}}"),
                 (f"vllm_profile_active_cost_per_million_tokens_dollars{{{SEL}}}",
                  "while busy {{instance}}")), 8, 8)  # fmt: skip
    why = panel("stat", "Why no roofline",
                "Each reason a roofline figure is absent (unknown_model: map it with "
                "--catalog-file or --model-params; unknown_gpu; no_gpu_data; ...). 0: the "
                "roofline is available.",
                "none",
                [target(f"count by (reason) (vllm_profile_roofline_unavailable{{{SEL}}}) "
                        "or on() vector(0)", "{{reason}}")],
                options={"reduceOptions": {"calcs": ["lastNotNull"]}, "textMode": "name"})  # fmt: skip
    why["fieldConfig"]["defaults"]["mappings"] = [
        {"type": "value", "options": {"0": {"text": "roofline available", "color": "green"}}}
    ]
    b.add(why, 6, 8)
    b.add(series("KV cache: mean and peak",
                 "KV cache usage: the time-weighted mean and the highest poll (every 250 ms from 70%). "
                 "A peak far "
                 "above the mean is a spike a 15 s scrape would miss.",
                 "percentunit",
                 (f"vllm_profile_kv_cache_usage_mean_ratio{{{SEL}}}", "mean {{instance}}"),
                 (f"vllm_profile_kv_cache_usage_peak_ratio{{{SEL}}}", "peak {{instance}}")),
          8, 8)  # fmt: skip
    b.add(series("How requests finished",
                 "Share of the requests finished over the exporter's horizon, by vLLM's "
                 "finished_reason: error and abort are requests users did not get (vLLM 0.13 "
                 "and later do not count client cancellations).",
                 "percentunit",
                 (f"vllm_profile_finished_requests_ratio{{{SEL}}}", "{{finished_reason}}")),
          8, 8)  # fmt: skip
    b.add(
        series(
            "Requests running and waiting",
            "Time-weighted means of vLLM's running and waiting requests.",
            "short",
            (f"vllm_profile_requests_running{{{SEL}}}", "running {{instance}}"),
            (f"vllm_profile_requests_waiting{{{SEL}}}", "waiting {{instance}}"),
        ),
        8,
        8,
    )
    b.add(
        series(
            "GPU utilization",
            "NVML GPU utilization per GPU, mean over active windows.",
            "percentunit",
            (f"vllm_profile_gpu_utilization_ratio{{{SEL}}}", "GPU {{gpu}}"),
        ),
        8,
        8,
    )
    b.add(series("Measured DRAM bandwidth",
                 "DRAM bandwidth utilization measured by NVML GPM (Hopper and newer): the "
                 "hardware's own counterpart to the roofline estimate.",
                 "percentunit",
                 (f"vllm_profile_gpu_dram_bandwidth_utilization_ratio{{{SEL}}}", "GPU {{gpu}}")),
          8, 8)  # fmt: skip
    b.add(
        series(
            "GPU power",
            "GPU power draw per GPU (mean over active windows) and the enforced limit.",
            "watt",
            (f"vllm_profile_gpu_power_watts{{{SEL}}}", "GPU {{gpu}}"),
            (f"vllm_profile_gpu_power_limit_watts{{{SEL}}}", "limit GPU {{gpu}}"),
        ),
        8,
        8,
    )
    b.add(
        series(
            "GPU memory",
            "GPU memory used (current and peak) against the total.",
            "bytes",
            (f"vllm_profile_gpu_memory_used_bytes{{{SEL}}}", "used GPU {{gpu}}"),
            (f"vllm_profile_gpu_memory_used_peak_bytes{{{SEL}}}", "peak GPU {{gpu}}"),
            (f"vllm_profile_gpu_memory_total_bytes{{{SEL}}}", "total GPU {{gpu}}"),
        ),
        8,
        8,
    )
    b.add(
        series(
            "Prefix cache hit ratio",
            "Prefix-cache hits over queries (tokens) over evaluable windows.",
            "percentunit",
            (f"vllm_profile_prefix_cache_hit_ratio{{{SEL}}}", "{{instance}}"),
        ),
        8,
        8,
    )
    b.add(series("Generated tokens (Prometheus resolution)",
                 "rate() of the exporter's generated-token counter as Prometheus sees it (idle "
                 "time included), for comparison with the active-window throughput.",
                 "short",
                 (f"rate(vllm_profile_observed_generation_tokens_total{{{SEL}}}[$__rate_interval])",
                  "{{instance}}")), 8, 8)  # fmt: skip
    b.add(
        stat(
            "Direction after the last change",
            "Better, worse or plateau: a full horizon after the latest configuration change "
            "against the last full horizon before it.",
            "none",
            f"vllm_profile_direction{{{SEL}}} == 1",
            "{{direction}}",
        ),
        6,
        8,
    )
    b.add(series(
        "Capacity, its interval and the load",
        "Requests/s the server can take before its first limit, the ends of its 90% interval, "
        "and the requests it finishes per second (docs/capacity.md). Absent while capacity is "
        "withheld: the panel beside it says why.",
        "reqps",
        (f'{{__name__=~"vllm_profile_capacity_(load_|lower_|upper_)?requests_per_second",{SEL}}}',
         "{{__name__}}"),
    ), 16, 8)  # fmt: skip
    b.add(stat(
        "Capacity stops at",
        "The limit capacity stops at (tpot: the TPOT objective; max_num_seqs: the scheduler's "
        "cap, R5's fix; kv_cache: a full KV cache, R2's fix), or why it is withheld.",
        "none",
        f"max by (limit) (vllm_profile_capacity_limit{{{SEL}}} == 1)\n or max by (limit, reason) "
        f'(label_replace(vllm_profile_capacity_unavailable{{{SEL}}} == 1, "limit", "withheld:", '
        '"", ""))',
        "{{limit}} {{reason}}",
    ), 8, 8)  # fmt: skip
    b.add(
        series(
            "Source health",
            "1 when the source answered its last poll (vllm, nvml or dcgm).",
            "none",
            (f"vllm_profile_up{{{SEL}}}", "{{source}}"),
        ),
        8,
        6,
    )
    b.add(
        series(
            "Poll duration",
            "How long the last poll of each source took; above the poll interval, polls "
            "are skipped.",
            "s",
            (f"vllm_profile_poll_duration_seconds{{{SEL}}}", "{{source}}"),
        ),
        8,
        6,
    )
    tune(b, OVERVIEW_LOOKS)
    rows: list[tuple[str | None, list[str]]] = [
        ("Summary", ["Efficiency (est)", "Recoverable cost (est)", "Cost per 1M tokens",
                     "Cost per 1M tokens while busy", "Duty cycle", "Energy per token",
                     "Open issues", "Throughput against the ceilings"]),
        ("Efficiency and issues", ["Efficiency and batch efficiency", "Rules firing",
                                   "Issues and fixes", "Why no roofline",
                                   "Direction after the last change"]),
        ("Latency and objectives", ["Time to first token", "Time per output token",
                                    "Latency objectives met", "Goodput", "Queue time",
                                    "How requests finished"]),
        ("Scheduler and KV cache", ["Requests running and waiting", "Scheduler occupancy",
                                    "Preemptions", "KV cache: mean and peak",
                                    "Prefix cache hit ratio"]),
        ("GPUs", ["GPU utilization", "Measured DRAM bandwidth", "GPU power", "GPU memory",
                  "GPU temperature"]),
        ("Money and tokens", ["Cost per 1M tokens: wall clock and while busy",
                              "Generated tokens (Prometheus resolution)"]),
        ("Capacity", ["Capacity, its interval and the load", "Capacity stops at"]),
        ("Exporter", ["Source health", "Poll duration"]),
    ]  # fmt: skip
    return dashboard("vllm-profile-overview", "vLLM profile: server", b.layout(rows),
                     per_server=True)  # fmt: skip


def fleet() -> dict[str, Any]:
    b = Board()
    m = f'{CL}=~"$cluster",namespace=~"$namespace",model=~"$model"'
    lvl, who = "cluster_namespace_model:vllm_profile_", "{{model}} {{namespace}} {{cluster}}"
    b.add(series("Recoverable cost by model (est)",
                 "Sum over servers of cost per hour x (1 - duty cycle x efficiency): idle servers "
                 "count with their whole cost.", "currencyUSD",
                 (f"{lvl}recoverable_cost_per_hour_dollars:sum{{{m}}}", who)),
          12, 8)  # fmt: skip
    b.add(series("Cost per 1M tokens by model",
                 "Dollars accrued over the last hour over the tokens generated in it, per model "
                 "(idle servers cost too).",
                 "currencyUSD",
                 (f"{lvl}wall_clock_cost_per_million_tokens_dollars:ratio1h{{{m}}}", who)),
          12, 8)  # fmt: skip
    b.add(
        series(
            "Efficiency by model (est)",
            "Generated tokens/s over the sum of hardware ceilings, per model.",
            "percentunit",
            (f"{lvl}efficiency:ratio{{{m}}}", who),
        ),
        12,
        8,
    )
    b.add(
        series(
            "Throughput by model",
            "Generated tokens/s of all of a model's servers, over every second (idle ones "
            "included): what the fleet really produces.",
            "short",
            (f"{lvl}generation_tokens:rate5m{{{m}}}", who),
        ),
        12,
        8,
    )
    gpu_lvl, on_gpu = "cluster_namespace_model_gpu:vllm_profile_", f"{who} on {{{{gpu_name}}}}"
    b.add(series("Replicas needed by model and GPU kind",
                 "The model's whole load over the weakest replica's lower capacity bound, rounded "
                 "up, per GPU kind (docs/capacity.md). Absent while every replica of that kind "
                 "withholds its capacity (the server dashboard says why).", "short",
                 (f"{gpu_lvl}replicas_needed:ceil{{{m}}}", on_gpu)),
          12, 8)  # fmt: skip
    b.add(series("Load and capacity by model",
                 "Requests per second the model's servers finish, and the weakest replica's lower "
                 "capacity bound per GPU kind: one replica of that kind takes at least this.",
                 "reqps",
                 (f"{lvl}capacity_load_requests_per_second:sum{{{m}}}", f"load {who}"),
                 (f"{gpu_lvl}capacity_lower_requests_per_second:min{{{m}}}",
                  f"one replica, lower bound: {on_gpu}")),
          12, 8)  # fmt: skip
    table_targets = [
        target(f"vllm_profile_wall_clock_recoverable_cost_per_hour_dollars{{{SEL}}}", ref="A",
               instant=True, fmt="table"),
        target(f"vllm_profile_efficiency_ratio{{{SEL}}}", ref="B", instant=True, fmt="table"),
        target(f"vllm_profile_cost_per_hour_dollars{{{SEL}}}", ref="C", instant=True, fmt="table"),
        target(f"vllm_profile_generation_tokens_per_second{{{SEL}}}", ref="D", instant=True,
               fmt="table"),
    ]  # fmt: skip
    b.add(panel("table", "Servers by recoverable cost",
                "Every server, most recoverable dollars per hour first: recoverable $/h, "
                "efficiency, cost per hour and throughput.",
                "none", table_targets,
                transformations=[
                    {"id": "merge", "options": {}},
                    {"id": "organize", "options": {"excludeByName": {"Time": True},
                     "renameByName": {"Value #A": "Recoverable $/h", "Value #B": "Efficiency",
                                      "Value #C": "Cost $/h", "Value #D": "tokens/s"}}},
                    {"id": "sortBy", "options": {"sort": [{"field": "Recoverable $/h",
                                                           "desc": True}]}},
                ]), 24, 10)  # fmt: skip
    tune(b, FLEET_LOOKS)
    rows: list[tuple[str | None, list[str]]] = [
        ("By model", ["Recoverable cost by model (est)", "Cost per 1M tokens by model",
                      "Efficiency by model (est)", "Throughput by model"]),
        ("Capacity by model", ["Replicas needed by model and GPU kind",
                               "Load and capacity by model"]),
        ("Servers", ["Servers by recoverable cost"]),
    ]  # fmt: skip
    return dashboard("vllm-profile-fleet", "vLLM profile: fleet", b.layout(rows),
                     per_server=False)  # fmt: skip


NO_TRAFFIC = "no traffic"  # what a panel shows when the figure is absent: nothing is served


def steps(*colours: tuple[str, float | None]) -> dict[str, Any]:
    return {"mode": "absolute",
            "steps": [{"color": c, "value": v} for c, v in colours]}  # fmt: skip


# How panels look beyond their query: absent figures say why, thresholds colour what needs
# attention. One place, by panel title.
OVERVIEW_LOOKS: dict[str, dict[str, Any]] = {
    "Efficiency (est)": {"noValue": NO_TRAFFIC},
    "Cost per 1M tokens": {"noValue": NO_TRAFFIC},
    "Cost per 1M tokens while busy": {"noValue": NO_TRAFFIC},
    "Energy per token": {"noValue": NO_TRAFFIC},
    "Throughput against the ceilings": {"noValue": NO_TRAFFIC},
    "Time to first token": {"noValue": NO_TRAFFIC},
    "Time per output token": {"noValue": NO_TRAFFIC},
    "Goodput": {"noValue": NO_TRAFFIC},
    "Latency objectives met": {
        "noValue": "no traffic, or no --slo-ttft/--slo-tpot",
        "thresholds": steps(("red", None), ("orange", 0.95), ("green", 0.99)),
        "custom": {"thresholdsStyle": {"mode": "line"}},
    },
    "Open issues": {"thresholds": steps(("green", None), ("orange", 1))},
    "KV cache: mean and peak": {
        "thresholds": steps(("green", None), ("orange", 0.8), ("red", 0.95)),
        "custom": {"thresholdsStyle": {"mode": "line"}},
    },
    "GPU temperature": {
        "thresholds": steps(("green", None), ("orange", 80), ("red", 87)),
        "custom": {"thresholdsStyle": {"mode": "line"}},
    },
    "Preemptions": {
        "thresholds": steps(("green", None), ("red", 0.01)),
        "custom": {"thresholdsStyle": {"mode": "line"}},
    },
}
FLEET_LOOKS: dict[str, dict[str, Any]] = {
    "Replicas needed by model and GPU kind": {"noValue": "capacity withheld"},
    "Servers by recoverable cost": {
        # Each row opens that server's dashboard, same data source and time range.
        "links": [
            {
                "title": "Open this server",
                "url": "/d/vllm-profile-overview/vllm-profile-server?var-instance="
                "${__data.fields.instance}&${datasource:queryparam}&${__url_time_range}",
            }
        ],
    },
}


def tune(b: Board, looks: dict[str, dict[str, Any]]) -> None:
    for title, look in looks.items():
        panel, _, _ = b.pending[title]  # a KeyError: a look for a panel that is not there
        panel["fieldConfig"]["defaults"].update(look)


def dashboard(
    uid: str, title: str, panels: list[dict[str, Any]], per_server: bool
) -> dict[str, Any]:
    # A mark where the configuration epoch changed (a restart, a new cache configuration, a
    # reload): what the direction panel compares across.
    epochs = {
        "name": "Restarts and reconfigurations", "datasource": DS, "enable": True,
        "iconColor": "orange", "step": "30s", "titleFormat": "configuration change",
        "textFormat": "{{instance}}: a new configuration epoch",
        "expr": f"changes(vllm_profile_config_epoch{{{SEL}}}[1m]) > 0",
    }  # fmt: skip
    # Where a configuration appeared that was not serving five minutes before: a rollout (or a
    # first start). A pod replaced by one of the same configuration marks nothing.
    by_config = f"count by ({CL}, namespace, model, config_id) "
    info = f'vllm_profile_info{{{SEL},config_id!=""}}'
    rollouts = {
        "name": "New configurations", "datasource": DS, "enable": True,
        "iconColor": "purple", "step": "30s", "titleFormat": "new configuration",
        "textFormat": "{{namespace}}/{{model}}: configuration {{config_id}}",
        "expr": f"{by_config}({info}) unless {by_config}({info} offset 5m)",
    }  # fmt: skip
    # The other vLLM profile dashboard, keeping the variables and the time range.
    others = {"title": "vLLM profile", "type": "dashboards", "tags": ["vllm-profile"],
              "asDropdown": False, "includeVars": True, "keepTime": True}  # fmt: skip
    return {
        "uid": uid, "title": title, "tags": ["vllm-profile"], "timezone": "utc",
        "editable": False, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
        "refresh": "30s", "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables(per_server)},
        "annotations": {"list": [epochs, rollouts]}, "links": [others], "panels": panels,
    }  # fmt: skip


DASHBOARDS = {"vllm-profile-overview.json": overview, "vllm-profile-fleet.json": fleet}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


# The chart carries its own copies (a packaged chart holds no link out of its directory).
CHART_FILES = HERE.parent / "helm" / "vllm-profile-exporter" / "files" / "dashboards"

if __name__ == "__main__":
    for name, text in render().items():
        for where in (HERE, CHART_FILES):
            (where / name).unlink(missing_ok=True)
            (where / name).write_text(text)
            print(f"wrote {where / name}")
