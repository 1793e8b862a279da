"""Pure parser: vLLM ``/metrics`` text (format 0.0.4) → :class:`EngineSample`.

Only the families the product uses are decoded (docs/design.md); every other line costs one dict
lookup. Both spellings are accepted: ``vllm:x`` and the escaped ``vllm_x``. Series of one family
are summed over label sets (DP engines), except KV usage, which takes the fullest engine.

>>> body = 'vllm:num_requests_running{engine="0",model_name="m"} 3.0\\n'
>>> s = parse_vllm_metrics(body, observed_at=1.0)
>>> (s.running, s.model_name)
(3.0, 'm')
"""

from __future__ import annotations

import math
from enum import Enum

from exporter.engines.vllm.serving import serving_config
from exporter.samples import EngineSample
from exporter.scrape.text_format import (
    MAX_BUCKETS,
    MAX_LINE,
    MAX_SERIES,
    HistSeries,
    ParseError,
    check_line,
    merge_histogram,
    parse_labels,
    parse_value,
)

__all__ = ["BODY_REASONS", "READS", "ParseError", "parse_vllm_metrics"]


class _Kind(Enum):
    SUM = 1  # gauges and counters summed over engines
    MAX = 2  # max over engines
    HIST = 3
    INFO = 4


# wire name (colon spelling, counters with their `_total`) -> (kind, sample field)
_FAMILIES: dict[str, tuple[_Kind, str]] = {
    "vllm:num_requests_running": (_Kind.SUM, "running"),
    "vllm:num_requests_waiting": (_Kind.SUM, "waiting"),
    "vllm:num_requests_waiting_by_reason": (_Kind.SUM, "waiting_by_reason"),
    "vllm:kv_cache_usage_perc": (_Kind.MAX, "kv"),
    "vllm:gpu_cache_usage_perc": (_Kind.MAX, "kv_legacy"),
    "vllm:prefix_cache_queries_total": (_Kind.SUM, "prefix_queries"),
    "vllm:prefix_cache_hits_total": (_Kind.SUM, "prefix_hits"),
    "vllm:external_prefix_cache_queries_total": (_Kind.SUM, "ext_prefix_queries"),
    "vllm:external_prefix_cache_hits_total": (_Kind.SUM, "ext_prefix_hits"),
    "vllm:gpu_prefix_cache_queries_total": (_Kind.SUM, "legacy_prefix_queries"),
    "vllm:gpu_prefix_cache_hits_total": (_Kind.SUM, "legacy_prefix_hits"),
    "vllm:num_preemptions_total": (_Kind.SUM, "preemptions"),
    "vllm:generation_tokens_total": (_Kind.SUM, "generation_tokens"),
    "vllm:prompt_tokens_total": (_Kind.SUM, "prompt_tokens"),
    "vllm:request_success_total": (_Kind.SUM, "requests_finished"),
    "vllm:estimated_flops_per_gpu_total": (_Kind.SUM, "est_flops"),
    "vllm:estimated_read_bytes_per_gpu_total": (_Kind.SUM, "est_read_bytes"),
    "vllm:estimated_write_bytes_per_gpu_total": (_Kind.SUM, "est_write_bytes"),
    "vllm:time_to_first_token_seconds": (_Kind.HIST, "ttft"),
    "vllm:request_time_per_output_token_seconds": (_Kind.HIST, "tpot"),
    "vllm:inter_token_latency_seconds": (_Kind.HIST, "itl"),
    "vllm:time_per_output_token_seconds": (_Kind.HIST, "tpot_legacy"),
    "vllm:request_prefill_time_seconds": (_Kind.HIST, "prefill_time"),
    "vllm:request_queue_time_seconds": (_Kind.HIST, "queue_time"),
    "vllm:request_prompt_tokens": (_Kind.HIST, "prompt_len"),
    "vllm:request_generation_tokens": (_Kind.HIST, "output_len"),
    "vllm:iteration_tokens_total": (_Kind.HIST, "step_tokens"),
    "vllm:cache_config_info": (_Kind.INFO, "cache_config"),
    "process_start_time_seconds": (_Kind.SUM, "process_start_time"),
}
_HIST_SUFFIXES = ("_bucket", "_sum", "_count")
MAX_REASONS = 16  # distinct finished_reason values kept from one body


def _sample_names() -> dict[str, tuple[str, _Kind, str]]:
    """Every sample name read, in both spellings → (suffix, kind, sample field); one dict
    lookup a line."""
    names: dict[str, tuple[str, _Kind, str]] = {}
    for family, (kind, field_name) in _FAMILIES.items():
        suffixes = _HIST_SUFFIXES if kind is _Kind.HIST else ("",)
        for suffix in suffixes:
            names[family + suffix] = (suffix, kind, field_name)
            if family.startswith("vllm:"):
                # Prometheus-escaped spelling of a colon name.
                names["vllm_" + family[5:] + suffix] = (suffix, kind, field_name)
    return names


_SAMPLE_NAMES = _sample_names()


def read_names() -> frozenset[str]:
    """Every sample name this parser reads (a recording cut to these parses the same)."""
    return frozenset(_SAMPLE_NAMES)


def _cut_le(label_text: str) -> tuple[str | None, str]:
    """Split ``le="…"`` out of a label text → (le value, the other labels' text).

    >>> _cut_le('engine="0",le="0.5",model_name="m"')
    ('0.5', 'engine="0",model_name="m"')
    """
    i = label_text.find('le="')
    while i > 0 and label_text[i - 1] not in ", {":
        i = label_text.find('le="', i + 1)
    if i == -1:
        return None, label_text
    j = label_text.find('"', i + 4)
    if j == -1:
        return None, label_text
    rest = (label_text[:i] + label_text[j + 1 :]).replace(",,", ",").strip(",")
    return label_text[i + 4 : j], rest


_BUCKET_LABELS: dict[str, tuple[float | None, str]] = {}
_BUCKET_LABELS_MAX = 4096  # distinct bucket label texts remembered; cleared when full
_BUCKET_LABEL_MEMO_CHARS = 512  # only texts this short are remembered: at most ~2 MiB in all
_CAPACITY, _CAPACITY_AFTER = 'reason="capacity"', ',reason="capacity"'
MAX_MODEL_NAMES = 32  # distinct model_name values kept from one body (several: none is claimed)


def _cut_bucket_labels(label_text: str, key: str) -> tuple[float | None, str]:
    """(the ``le`` bound, the other labels' text) of a histogram line, remembered."""
    le, series_text = _cut_le(label_text)
    bound: float | None = None
    if le is not None:
        try:
            bound = float(le)
        except ValueError:
            raise ParseError("bad_histogram", f"{key}: le={le!r}") from None
        if math.isnan(bound) or bound == -math.inf:
            raise ParseError("bad_histogram", f"{key}: le={le!r}")
    if len(label_text) <= _BUCKET_LABEL_MEMO_CHARS:
        if len(_BUCKET_LABELS) >= _BUCKET_LABELS_MAX:
            _BUCKET_LABELS.clear()
        _BUCKET_LABELS[label_text] = (bound, series_text)
    return bound, series_text


# What every poll needs (docs/sources.md): the gauges the windows average and the cadence watches,
# and what tells a restart; counters and histograms count only at a window's first and last polls.
# In the order vLLM writes them (the search goes on from the last find), each with the legacy
# name read when the current one is absent, as parse_vllm_metrics does.
def parse_vllm_metrics(body: str, observed_at: float) -> EngineSample:
    """Decode one body. Raises :class:`ParseError` on anything that makes it untrustworthy."""
    if body and not body.endswith("\n"):
        raise ParseError("truncated", "body does not end with a newline")
    scalars: dict[str, float] = {}
    seen: set[str] = set()  # name{labels} of every series read
    hists: dict[str, dict[tuple[tuple[str, str], ...], HistSeries]] = {}
    cache_config: dict[str, str] | None = None
    model_names: set[str] = set()
    engines: set[str] = set()
    finished: dict[str, float] = {}  # request_success_total by finished_reason
    # Of the requests waiting, those waiting for the scheduler's capacity (vLLM >= 0.20); the
    # others ("deferred") wait for something else than a slot.
    waiting_capacity, seen_by_reason = 0.0, False
    label_memo: dict[str, dict[str, str]] = {}
    # (histogram field, series label text) → its series: a bucket line costs a dict lookup,
    # not a label parse and sort (a body is mostly bucket lines).
    series_memo: dict[tuple[str, str], HistSeries] = {}

    def _name_of(labels: dict[str, str]) -> None:
        name = labels.get("model_name")
        if name and (name in model_names or len(model_names) < MAX_MODEL_NAMES):
            model_names.add(name)

    def _labels(text: str, line: str) -> dict[str, str]:
        parsed = label_memo.get(text)
        if parsed is None:
            parsed = label_memo[text] = parse_labels(text, line) if text else {}
        return parsed

    read = 0  # lines of the families read: at most MAX_SERIES
    # Module constants as locals: this loop runs for every line of every poll.
    sample_names, bucket_labels, inf, hist, info, biggest = (
        _SAMPLE_NAMES,
        _BUCKET_LABELS,
        math.inf,
        _Kind.HIST,
        _Kind.INFO,
        _Kind.MAX,
    )
    for line in body.split("\n"):
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        if brace != -1:
            hit = sample_names.get(line[:brace])
            if hit is None:
                continue
            close = line.rfind("}")
            if close < brace:
                raise ParseError("malformed", f"unclosed label set in line {line[:120]!r}")
            key, label_text, rest = line[: close + 1], line[brace + 1 : close], line[close + 1 :]
        else:
            key, _, rest = line.partition(" ")
            hit = sample_names.get(key)
            if hit is None:
                continue
            if not rest:
                raise ParseError("malformed", f"no value in line {line[:120]!r}")
            label_text = ""
        suffix, kind, field_name = hit
        read += 1
        if read > MAX_SERIES or len(line) > MAX_LINE:
            if read > MAX_SERIES:
                raise ParseError("too_many_series", f"more than {MAX_SERIES} series read")
            check_line(line)
        try:
            value = float(rest)  # the usual case: a value alone (spaces around are ignored)
        except ValueError:
            value = parse_value(rest, line)
        if key in seen:
            raise ParseError("duplicate_series", f"{key} appears twice")
        seen.add(key)
        if not 0.0 <= value < inf:  # NaN, ±Inf and negatives: the slow path says which
            if math.isfinite(value):
                raise ParseError("negative", f"{key} is {value}")
            if not (suffix == "_bucket" and value == inf):
                raise ParseError("non_finite", f"{key} is {value}")
        if kind is hist:
            # Buckets of one series differ only in `le`: cut it out of the text and key the
            # series by the rest, so each series' labels are parsed once, not per bucket. The
            # cut is remembered across bodies: vLLM writes the same label texts every poll.
            cut = bucket_labels.get(label_text)
            if cut is None:
                cut = _cut_bucket_labels(label_text, key)
            bound, series_text = cut
            s = series_memo.get((field_name, series_text))
            if s is None:
                series_labels = _labels(series_text, line)
                _name_of(series_labels)
                series_key = tuple(sorted(series_labels.items()))
                s = hists.setdefault(field_name, {}).setdefault(series_key, HistSeries({}))
                series_memo[(field_name, series_text)] = s
            if suffix == "_bucket":
                if bound is None:
                    raise ParseError("bad_histogram", f"{key}: a bucket without le")
                if len(s.buckets) >= MAX_BUCKETS and bound not in s.buckets:
                    raise ParseError("too_many_series", f"{key}: over {MAX_BUCKETS} buckets")
                s.buckets[bound] = value
            elif suffix == "_sum":
                s.sum = value
            else:
                s.count = value
            continue
        if field_name == "waiting_by_reason":
            # The same engines and models as num_requests_waiting's lines: no label parse.
            if label_text.startswith(_CAPACITY) or _CAPACITY_AFTER in label_text:
                waiting_capacity += value
            seen_by_reason = True
            continue
        if 'model_name="' in label_text:
            _name_of(_labels(label_text, line))
        if kind is info:
            labels = _labels(label_text, line)
            if cache_config is None:
                cache_config = {k: v for k, v in labels.items() if k != "engine"}
        elif kind is biggest:
            scalars[field_name] = max(value, scalars.get(field_name, value))
        else:
            scalars[field_name] = scalars.get(field_name, 0.0) + value
            if field_name == "running":
                engines.add(_labels(label_text, line).get("engine", ""))
            elif field_name == "requests_finished":
                reason = _labels(label_text, line).get("finished_reason")
                # vLLM has five reasons; a body inventing more gets no more than a few kept.
                if reason and (reason in finished or len(finished) < MAX_REASONS):
                    finished[reason] = finished.get(reason, 0.0) + value

    if not scalars and not hists and cache_config is None and not seen_by_reason:
        raise ParseError("no_vllm_metrics", "body holds none of the vLLM families read")
    merged = {field_name: merge_histogram(field_name, s) for field_name, s in hists.items()}
    # Each value was finite; a sum over engines can still overflow to infinity.
    for field_name, v in scalars.items():
        if not math.isfinite(v):
            raise ParseError("non_finite", f"the sum of {field_name} over engines overflows")
    for field_name, h in merged.items():
        if not (math.isfinite(h.sum) and math.isfinite(h.count)) or math.inf in h.cumulative:
            raise ParseError("non_finite", f"the sum of {field_name} over engines overflows")

    def either(new: str, legacy: str) -> float | None:
        return scalars.get(new, scalars.get(legacy))

    def plus_external(value: float | None, ext: str) -> float | None:
        if value is None:
            return None
        total = value + scalars.get(ext, 0.0)
        if not math.isfinite(total):
            raise ParseError("non_finite", f"prefix cache counters plus {ext} overflow")
        return total

    names = tuple(sorted(model_names))
    return EngineSample(
        observed_at=observed_at,
        # Several names in one body (a router in front of several servers, or several models):
        # the sums mix them, so no one name is claimed for them (docs/design.md).
        model_name=names[0] if len(names) == 1 else None,
        model_names=names,
        running=scalars.get("running"),
        waiting=scalars.get("waiting"),
        waiting_capacity=waiting_capacity if seen_by_reason else None,
        kv_usage=either("kv", "kv_legacy"),
        prefix_queries=plus_external(
            either("prefix_queries", "legacy_prefix_queries"), "ext_prefix_queries"
        ),
        prefix_hits=plus_external(either("prefix_hits", "legacy_prefix_hits"), "ext_prefix_hits"),
        preemptions=scalars.get("preemptions"),
        generation_tokens=scalars.get("generation_tokens"),
        prompt_tokens=scalars.get("prompt_tokens"),
        requests_finished=scalars.get("requests_finished"),
        finished_by_reason=finished,
        ttft=merged.get("ttft"),
        tpot=merged.get("tpot") or merged.get("itl") or merged.get("tpot_legacy"),
        prefill_time=merged.get("prefill_time"),
        queue_time=merged.get("queue_time"),
        prompt_len=merged.get("prompt_len"),
        output_len=merged.get("output_len"),
        steps=steps.count if (steps := merged.get("step_tokens")) is not None else None,
        est_flops=scalars.get("est_flops"),
        est_read_bytes=scalars.get("est_read_bytes"),
        est_write_bytes=scalars.get("est_write_bytes"),
        process_start_time=scalars.get("process_start_time"),
        serving=serving_config(cache_config or {}),
        engines=len(engines),
    )


# The reasons only these parsers give (the bounds' and text format's are every engine's).
BODY_REASONS = ("truncated", "negative", "duplicate_series", "bad_histogram", "no_vllm_metrics")
READS = tuple(_FAMILIES)  # the families read, by their colon name
