"""The live status page at ``/``: server-rendered HTML with inline CSS and SVG, no script.

Every figure on the page is read from the same families ``/metrics`` serves at that moment (the
family table in :mod:`exporter.export.collector`), so the page and a scrape never disagree and a
figure absent from one is absent from the other. Each figure carries its metric name and exact
value in ``data-metric``/``data-value`` attributes for tools and tests. The texts (an issue's cause
and fix, why a rule was skipped) come from the snapshot's diagnosis, shown under the same
freshness rule as the rule families. Everything taken from a target (a model name, a GPU name,
an error) is escaped. A ``<meta http-equiv="refresh">`` reloads it; nothing needs JavaScript.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import Metric

from exporter import human
from exporter.derive.capacity import REASONS as CAPACITY_REASONS
from exporter.derive.diagnosis import RuleStatus
from exporter.derive.roofline_reasons import REASONS
from exporter.export.collector import ExportSettings, metric_families
from exporter.export.page_style import CSS
from exporter.export.roofline_svg import roofline_svg
from exporter.pipeline import Snapshot

REFRESH_SECONDS = 5
NS = "vllm_profile_"
Key = tuple[str, tuple[tuple[str, str], ...]]

# Where the tensor-parallel size came from, in words (vllm_profile_info's source codes).
_SOURCE_WORDS: Mapping[str, str] = {"gpus": "the GPUs seen", "env": "the environment"}


@dataclass(frozen=True, slots=True)
class PageContext:
    """What the page says besides the snapshot: the exporter, its target (already redacted)
    and, in demo mode, what the demo declares rather than records."""

    version: str
    target: str
    demo_note: str | None = None


def _values(families: Sequence[Metric]) -> dict[Key, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


class _Figures:
    """Lookup of the exported samples by short name and labels."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self.values = _values(families)
        self.labels: dict[str, list[dict[str, str]]] = {}
        for (name, labels), _ in self.values.items():
            self.labels.setdefault(name, []).append(dict(labels))

    def get(self, short: str, **labels: str) -> float | None:
        return self.values.get((NS + short, tuple(sorted(labels.items()))))

    def one(self, short: str) -> tuple[dict[str, str], float] | None:
        """The family's only (or first) sample, whatever its labels."""
        rows = self.labels.get(NS + short)
        if not rows:
            return None
        labels = rows[0]
        return labels, self.values[(NS + short, tuple(sorted(labels.items())))]


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt(v: float, kind: str) -> str:
    """A figure for a person, by kind (see :mod:`exporter.human`)."""
    shown = {"pct": human.percent, "usd": human.dollars, "ms": human.duration,
             "tps": human.tokens_per_second, "bytes": human.size}.get(kind)  # fmt: skip
    if shown is not None:
        return shown(v)
    if kind == "j":
        return f"{v:.3g} J"
    if kind == "w":
        return f"{v:,.0f} W"
    return f"{v:,.4g}"


def _figure(f: _Figures, label: str, short: str, kind: str, **labels: str) -> str:
    v = f.get(short, **labels)
    if v is None:
        return f'<div class="fig absent"><span>{_e(label)}</span><b>—</b></div>'
    name = NS + short + ("{" + ",".join(f'{k}="{x}"' for k, x in labels.items()) + "}" if labels
                         else "")  # fmt: skip
    return (
        f'<div class="fig"><span>{_e(label)}</span>'
        f'<b data-metric="{_e(name)}" data-value="{v!r}">{_e(_fmt(v, kind))}</b></div>'
    )


def _age(now: float, t: float | None) -> str:
    if t is None:
        return "never"
    s = max(0.0, now - t)
    if s < 120:
        return f"{s:.1f} s ago"
    return f"{s / 60:.0f} min ago" if s < 7200 else f"{s / 3600:.0f} h ago"


def _sources(snap: Snapshot, f: _Figures, now: float) -> str:
    rows = []
    for source, h in snap.health.items():
        errors = ", ".join(f"{_e(r)} {n}" for r, n in sorted(h.errors.items()) if n) or "none"
        last_error = (
            f'<div class="why">{_e(h.last_error)}</div>' if h.last_error and not h.up else ""
        )
        up = f.get("up", source=source)
        rows.append(
            f'<tr><td>{_e(source)}</td><td class="{"ok" if h.up else "bad"}" '
            f'data-metric="{NS}up{{source=&quot;{_e(source)}&quot;}}" data-value="{up!r}">'
            f"{'up' if h.up else 'down'}</td><td>{_age(now, h.last_success)}</td>"
            f"<td>{'—' if h.interval is None else f'{h.interval:g} s'}</td>"
            f"<td>{h.polls:,}</td><td>{errors}{last_error}</td></tr>"
        )
    body = "".join(rows) or '<tr><td colspan="6">no poll yet</td></tr>'
    return (
        "<section><h2>Sources</h2><table><tr><th>source</th><th>state</th><th>last answer</th>"
        f"<th>cadence</th><th>polls</th><th>errors</th></tr>{body}</table></section>"
    )


def _model_match(labels: Mapping[str, str]) -> str:
    matched = labels.get("model_matched_on", "")
    if matched == "flag":
        return "parameters given by --model-params (no catalog entry used)"
    if not labels.get("model_catalog"):
        return "not in the catalog"
    how = f"on the root it serves, {_e(labels.get('model_root', ''))}" if matched == "root" else (
        "on its served name")  # fmt: skip
    return f"catalog <b>{_e(labels['model_catalog'])}</b>, matched {how}"


def _catalog(snap: Snapshot, f: _Figures) -> str:
    info = f.one("info")
    labels = info[0] if info else {}
    n = len(snap.agg.gpus)
    gpu = f"{labels['gpu_name']} × {n}" if labels.get("gpu_name") else "no GPU readings"
    tp_source = labels.get("tensor_parallel_size_source", "")
    lines = [
        f"<tr><th>model</th><td>{_e(labels.get('model') or '—')}</td><td>"
        + _model_match(labels)
        + "</td></tr>",
        f"<tr><th>GPU</th><td>{_e(gpu)}</td><td>"
        + (
            f"catalog <b>{_e(labels['gpu_catalog'])}</b>"
            if labels.get("gpu_catalog")
            else "not in the catalog"
        )  # fmt: skip
        + "</td></tr>",
        f"<tr><th>weights</th><td>{_e(labels.get('dtype') or '—')}</td><td>from "
        f"{_e(labels.get('dtype_source') or '—')}; tensor parallel "
        f"{_e(labels.get('tensor_parallel_size') or '—')} (from "
        f"{_e(_SOURCE_WORDS.get(tp_source, tp_source or '—'))}), pipeline parallel "
        f"{_e(labels.get('pipeline_parallel_size') or '—')} (from "
        f"{_e(labels.get('pipeline_parallel_size_source') or '—')})</td></tr>",
    ]
    why = [
        f'<li data-reason="{_e(lv["reason"])}"><b>{_e(lv["reason"])}</b>: '
        f"{_e(REASONS.get(lv['reason'], ''))}</li>"
        for lv in f.labels.get(NS + "roofline_unavailable", [])
    ]
    missing = f'<p class="why">No roofline:</p><ul>{"".join(why)}</ul>' if why else ""
    return f"<section><h2>Catalog</h2><table>{''.join(lines)}</table>{missing}</section>"


def _roofline(snap: Snapshot, f: _Figures) -> str:
    stream = f.get("decode_stream_ceiling_tokens_per_second")
    hardware = f.get("decode_hardware_ceiling_tokens_per_second")
    ridge = f.get("ridge_batch_size")
    figures = "".join([
        _figure(f, "efficiency", "efficiency_ratio", "pct"),
        _figure(f, "batch efficiency", "batch_efficiency_ratio", "pct"),
        _figure(f, "one-stream ceiling", "decode_stream_ceiling_tokens_per_second", "tps"),
        _figure(f, "ceiling at this batch", "decode_batch_ceiling_tokens_per_second", "tps"),
        _figure(f, "hardware ceiling", "decode_hardware_ceiling_tokens_per_second", "tps"),
        _figure(f, "ridge batch", "ridge_batch_size", ""),
        _figure(f, "TPOT floor", "tpot_floor_seconds", "ms"),
        _figure(f, "weights", "model_weight_bytes", "bytes"),
    ])  # fmt: skip
    if stream and hardware and ridge:
        picture = roofline_svg(stream, hardware, ridge, snap.agg.running_active,
                               f.get("decode_batch_ceiling_tokens_per_second"),
                               f.get("generation_tokens_per_second"),
                               snap.agg.generation_tps_range)  # fmt: skip
    else:
        picture = (
            '<p class="why">No roofline picture: the ceilings are not known (see Catalog).</p>'
        )
    return (
        '<section class="wide"><h2>Roofline <small>estimate from the catalog</small></h2>'
        f'<div class="roofline">{picture}<div class="figs">{figures}</div></div></section>'
    )


def _serving(snap: Snapshot, f: _Figures) -> str:
    figs = "".join([
        _figure(f, "generated", "generation_tokens_per_second", "tps"),
        _figure(f, "requests/s", "requests_per_second", ""),
        _figure(f, "running", "requests_running", ""),
        _figure(f, "waiting", "requests_waiting", ""),
        _figure(f, "TTFT mean", "time_to_first_token_mean_seconds", "ms"),
        _figure(f, "TTFT p99", "time_to_first_token_p99_seconds", "ms"),
        _figure(f, "TPOT mean", "time_per_output_token_mean_seconds", "ms"),
        _figure(f, "TPOT p99", "time_per_output_token_p99_seconds", "ms"),
        _figure(f, "KV cache mean", "kv_cache_usage_mean_ratio", "pct"),
        _figure(f, "KV cache peak", "kv_cache_usage_peak_ratio", "pct"),
        _figure(f, "prefix hits", "prefix_cache_hit_ratio", "pct"),
        _figure(f, "preemptions/s", "preemptions_per_second", ""),
        *(
            [_figure(f, "TTFT objective met", "slo_ttft_attainment_ratio", "pct"),
             _figure(f, "TPOT objective met", "slo_tpot_attainment_ratio", "pct"),
             _figure(f, "goodput (at most)", "goodput_tokens_per_second", "tps")]
            if snap.slo is not None else []
        ),
    ])  # fmt: skip
    return f'<section><h2>Serving</h2><div class="figs">{figs}</div></section>'


def _money(f: _Figures) -> str:
    ps = next((lv["price_source"] for lv in f.labels.get(NS + "cost_per_hour_dollars", [])), None)
    priced = {"price_source": ps} if ps else {}

    def money(label: str, short: str) -> str:
        return _figure(f, label, short, "usd", **priced)

    figs = "".join([
        money("cost per hour", "cost_per_hour_dollars"),
        money("per 1M tokens, wall clock", "wall_clock_cost_per_million_tokens_dollars"),
        money("per 1M tokens, while busy", "active_cost_per_million_tokens_dollars"),
        money("recoverable per hour, wall clock", "wall_clock_recoverable_cost_per_hour_dollars"),
        money("recoverable per hour, while busy", "active_recoverable_cost_per_hour_dollars"),
        _figure(f, "duty cycle", "duty_cycle_ratio", "pct"),
        _figure(f, "energy per token", "active_energy_per_token_joules", "j"),
        _figure(f, "GPU power", "gpu_power_total_watts", "w"),
    ])  # fmt: skip
    where = human.PRICE_SOURCES.get(ps or "", "no price known: give --cost-per-hour")
    return (
        f"<section><h2>Money and energy <small>{_e(where)}</small></h2>"
        f'<div class="figs">{figs}</div></section>'
    )


def _issues(snap: Snapshot) -> str:
    d = snap.diagnosis
    if d is None or not snap.agg.engine_fresh:
        return "<section><h2>Issues</h2><p>No diagnosis while vLLM does not answer.</p></section>"
    items = []
    for g in d.groups:
        p = g.primary
        also = "".join(
            f"<li>{_e(s.name)} ({_e(s.rule)}): {_e(s.evidence)}</li>" for s in g.supporting
        )
        items.append(
            f'<article class="issue" data-rule="{_e(p.rule)}" data-fix="{_e(p.fix_code)}">'
            f"<h3>{_e(p.name)} <small>{_e(p.rule)}, {_e(g.group)}, in {p.score:.0%} of "
            f"windows</small></h3><p><b>Cause:</b> {_e(p.evidence)}</p>"
            f"<p><b>Fix:</b> {_e(p.fix)}</p>" + (f"<ul>{also}</ul>" if also else "") + "</article>"
        )
    found = "".join(items) or '<p class="ok">No persistent bottleneck.</p>'
    return f'<section class="wide"><h2>Issues</h2>{found}{_rules(d.rules)}</section>'


def _rules(rules: Sequence[RuleStatus]) -> str:
    rows = []
    for s in rules:
        latest = s.latest
        if s.significant:
            state = "significant"
        elif latest is not None and latest.skipped is not None:
            state = "skipped"
        else:
            state = "not significant" if s.fired_windows else "not triggered"
        why = "" if latest is None else latest.why
        name = s.name + (f" ({s.variant})" if s.variant else "")
        rows.append(
            f'<tr class="{state.replace(" ", "-")}"><td>{_e(s.rule)}</td><td>{_e(name)}</td>'
            f"<td>{state}</td><td>{s.fired_windows} of {s.evaluable_windows}</td>"
            f"<td>{_e(why)}</td></tr>"
        )
    return (
        "<details open><summary>Every rule</summary><table><tr><th>rule</th><th>name</th>"
        "<th>state</th><th>fired in</th><th>latest window</th></tr>"
        f"{''.join(rows)}</table></details>"
    )


def _direction(f: _Figures) -> str:
    verdict = next((lv["direction"] for lv in f.labels.get(NS + "direction", [])
                    if f.get("direction", direction=lv["direction"]) == 1), None)  # fmt: skip
    epoch = f.get("config_epoch")
    if verdict is None:
        text = "No comparison yet: a full horizon on each side of a configuration change is needed."
        return f"<section><h2>Direction</h2><p>{_e(text)} Epoch {epoch or 0:g}.</p></section>"
    figs = "".join([
        _figure(f, "efficiency per request", "efficiency_delta_ratio", "pct"),
        _figure(f, "throughput", "throughput_delta_ratio", "pct"),
        _figure(f, "TTFT p99", "ttft_p99_delta_ratio", "pct"),
    ])  # fmt: skip
    return (
        f'<section><h2>Direction</h2><p class="verdict {_e(verdict)}">{_e(verdict)} after the '
        f'last change (epoch {epoch or 0:g})</p><div class="figs">{figs}</div></section>'
    )


def _capacity(f: _Figures) -> str:
    """Capacity from its families (docs/capacity.md): the answer and its limit, or why not."""
    withheld = f.one("capacity_unavailable")
    if withheld is not None:
        reason = withheld[0].get("reason", "")
        text = CAPACITY_REASONS.get(reason, reason)
        return (f'<section><h2>Capacity</h2><p class="why">Not estimated: {_e(text)} '
                f"(<code>{_e(reason)}</code>).</p></section>")  # fmt: skip
    limit = next((lv["limit"] for lv in f.labels.get(NS + "capacity_limit", [])
                  if f.get("capacity_limit", limit=lv["limit"]) == 1), None)  # fmt: skip
    figs = "".join([
        _figure(f, "capacity, req/s", "capacity_requests_per_second", ""),
        _figure(f, "90% from", "capacity_lower_requests_per_second", ""),
        _figure(f, "90% to", "capacity_upper_requests_per_second", ""),
        _figure(f, "headroom, req/s", "capacity_headroom_requests_per_second", ""),
        _figure(f, "running at capacity", "capacity_concurrency_target", ""),
        _figure(f, "fit on windows", "capacity_fit_windows", ""),
    ])  # fmt: skip
    stops = f"stops at <b>{_e(LIMIT_WORDS.get(limit or '', limit or '?'))}</b>"
    return f'<section><h2>Capacity</h2><p>{stops}</p><div class="figs">{figs}</div></section>'


LIMIT_WORDS = {"tpot": "the TPOT objective",
               "ttft": "the TTFT objective, waiting for a slot (R5's fix)",
               "max_num_seqs": "--max-num-seqs (R5's fix)",
               "kv_cache": "a full KV cache (R2's fix)"}  # fmt: skip


def render(snap: Snapshot, settings: ExportSettings, ctx: PageContext, now: float) -> bytes:
    """The whole page for one snapshot."""
    f = _Figures(metric_families(snap, settings))
    window = snap.agg.horizon_end
    fresh = (f"latest window closed {_age(now, window)}" if window is not None
             else "no window yet")  # fmt: skip
    demo = f'<div class="demo"><b>Demo.</b> {_e(ctx.demo_note)}</div>' if ctx.demo_note else ""
    body = "".join([
        _sources(snap, f, now), _catalog(snap, f), _roofline(snap, f), _serving(snap, f), _money(f),
        _issues(snap), _direction(f), _capacity(f),
    ])  # fmt: skip
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>vllm-profile-exporter — {_e(ctx.target)}</title><style>{CSS}</style></head>"
        f"<body><header><h1>vllm-profile-exporter {_e(ctx.version)}</h1><p>profiling "
        f"<code>{_e(ctx.target)}</code> · horizon {settings.horizon_seconds:g} s · {fresh}</p>"
        f"</header>{demo}<main>{body}</main><footer>Figures over the last "
        f'{settings.horizon_seconds:g} s, as <a href="/metrics">/metrics</a> serves them now; '
        f"this page reloads every {REFRESH_SECONDS} s.</footer></body></html>"
    )
    return page.encode()


class StatusPage:
    """``/``: rendered from the snapshot of the moment, at most once per snapshot."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        settings: Callable[[], ExportSettings],
        context: Callable[[], PageContext],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._snapshot, self._settings, self._context, self._clock = (
            snapshot, settings, context, clock)  # fmt: skip
        self._last: tuple[Snapshot, ExportSettings, PageContext, bytes] | None = None

    def __call__(self) -> bytes:
        snap, settings, ctx = self._snapshot(), self._settings(), self._context()
        last = self._last
        if last is not None and last[0] is snap and last[1] is settings and last[2] is ctx:
            return last[3]
        page = render(snap, settings, ctx, self._clock())
        self._last = (snap, settings, ctx, page)
        return page
