"""Pure parser: SGLang ``/metrics`` text (``--enable-metrics``, format 0.0.4) → EngineSample.

What each figure is read from, and what is approximated or absent, is docs/sources.md#sglang.
SGLang writes scheduler figures once per scheduler process, labelled ``tp_rank`` and
``pp_rank``; the ranks of one tensor- or pipeline-parallel group run the same schedule, so only
rank 0 of each is read, and data-parallel ranks (``dp_rank``) are summed (KV usage: the fullest).
Request figures (tokens, requests, latencies) come from the front end, labelled
``is_streaming``, and are summed.

>>> body = 'sglang:num_running_reqs{model_name="m",tp_rank="0"} 3.0\\n'
>>> s = parse_sglang_metrics(body, observed_at=1.0)
>>> (s.running, s.model_name, s.engines)
(3.0, 'm', 1)
"""

from __future__ import annotations

import math

from exporter.samples import EngineSample, ServingConfig
from exporter.scrape.text_format import (
    MAX_BUCKETS,
    MAX_SERIES,
    HistSeries,
    ParseError,
    check_line,
    merge_histogram,
    parse_labels,
    parse_value,
    split_line,
)

__all__ = ["BODY_REASONS", "READS", "parse_sglang_metrics"]

P = "sglang:"
# Scalars: wire name → what it is.
_SCALARS = {
    P + "num_running_reqs": "running",
    P + "num_queue_reqs": "waiting",
    P + "token_usage": "token_usage",
    P + "kv_used_tokens": "kv_used",
    P + "max_total_num_tokens": "kv_total",
    P + "prompt_tokens_total": "prompt_tokens",
    P + "generation_tokens_total": "generation_tokens",
    P + "num_requests_total": "requests_finished",
    P + "cached_tokens_total": "cached_tokens",
    P + "cache_hit_rate": "hit_rate_now",
    P + "num_retracted_requests_total": "retractions",
    P + "num_retracted_reqs": "retracted_now",
    P + "page_size": "page_size",
    P + "context_len": "context_len",
    # Forward passes by mode (prefill or decode, with or without a CUDA graph): the decode
    # passes are the engine steps (each generates one token per running request).
    P + "cuda_graph_passes_total": "passes",
    # Tokens as the passes make them, by mode: decode (generated), prefill_compute (prompt
    # tokens computed), prefill_cache (taken from the prefix cache).
    P + "realtime_tokens_total": "realtime_tokens",
}
_HISTOGRAMS = {
    P + "time_to_first_token_seconds": "ttft",
    P + "request_time_per_output_token_seconds": "tpot",
    P + "inter_token_latency_seconds": "itl",
    P + "queue_time_seconds": "queue_time",
    P + "prompt_tokens_histogram": "prompt_len",
    P + "generation_tokens_histogram": "output_len",
    # Per request stage; only the prefill forward's is read (vLLM's prefill time).
    P + "per_stage_req_latency_seconds": "prefill_time",
}
PREFILL_STAGE = "prefill_forward"
_REALTIME = {"decode": "step_generated", "prefill_compute": "step_prefilled"}
# Per data-parallel rank, the fullest rank counts (the one that retracts first).
_PER_RANK = frozenset({"token_usage", "kv_used", "kv_total"})
_SUFFIXES = ("_bucket", "_sum", "_count")
MAX_MODEL_NAMES = 32


def _lead_rank(labels: dict[str, str]) -> bool:
    """Rank 0 of its tensor- and pipeline-parallel group (front-end series carry no rank)."""
    return labels.get("tp_rank", "0") == "0" and labels.get("pp_rank", "0") == "0"


def parse_sglang_metrics(body: str, observed_at: float) -> EngineSample:
    """Decode one body. Raises :class:`ParseError` on anything that makes it untrustworthy."""
    if body and not body.endswith("\n"):
        raise ParseError("truncated", "body does not end with a newline")
    sums: dict[str, float] = {}
    ranks: dict[str, dict[str, float]] = {}  # per-rank figures by dp_rank
    hists: dict[str, dict[tuple[tuple[str, str], ...], HistSeries]] = {}
    seen: set[str] = set()
    models: set[str] = set()
    dp_ranks: set[str] = set()
    read = 0
    for line in body.splitlines():
        if not line.startswith(P):
            continue
        check_line(line)
        name, label_text, rest = split_line(line)
        base, suffix = name, ""
        for sfx in _SUFFIXES:
            if name.endswith(sfx) and name[: -len(sfx)] in _HISTOGRAMS:
                base, suffix = name[: -len(sfx)], sfx
        what = _HISTOGRAMS[base] if suffix else _SCALARS.get(name)
        if what is None:
            continue
        read += 1
        if read > MAX_SERIES:
            raise ParseError("too_many_series", f"more than {MAX_SERIES} series read")
        if f"{name}{{{label_text}}}" in seen:
            raise ParseError("duplicate_series", f"{name}{{{label_text[:80]}}} appears twice")
        seen.add(f"{name}{{{label_text}}}")
        value = parse_value(rest, line)
        if math.isnan(value) or math.isinf(value):
            raise ParseError("non_finite", f"{name} is {value}")
        if value < 0:
            raise ParseError("negative", f"{name} is {value}")
        labels = parse_labels(label_text, line)
        if (m := labels.get("model_name")) and len(models) < MAX_MODEL_NAMES:
            models.add(m)
        if not _lead_rank(labels):
            continue
        if what == "prefill_time" and labels.pop("stage", None) != PREFILL_STAGE:
            continue
        if what == "passes":
            what = "steps" if labels.get("mode", "").startswith("decode") else "prefill_passes"
        elif what == "realtime_tokens":
            what = _REALTIME.get(labels.get("mode", ""), "realtime_other")
        if suffix:
            le = labels.pop("le", None)
            key = tuple(sorted(labels.items()))
            h = hists.setdefault(what, {}).setdefault(key, HistSeries({}))
            if suffix == "_bucket":
                if le is None:
                    raise ParseError("bad_histogram", f"{name}: a bucket without le")
                try:
                    h.buckets[float(le)] = value
                except ValueError:
                    raise ParseError("bad_histogram", f"{name}: le={le[:40]!r}") from None
                if len(h.buckets) > MAX_BUCKETS:
                    raise ParseError("too_many_series", f"{name}: over {MAX_BUCKETS} buckets")
            elif suffix == "_sum":
                h.sum = value
            else:
                h.count = value
        elif what in _PER_RANK:
            dp = labels.get("dp_rank", "0")
            dp_ranks.add(dp)
            ranks.setdefault(what, {})[dp] = value
        else:
            if what == "running":
                dp_ranks.add(labels.get("dp_rank", "0"))
            sums[what] = sums.get(what, 0.0) + value
    if not read:
        raise ParseError("no_sglang_metrics", "body holds none of the SGLang families read")
    merged = {what: merge_histogram(what, series) for what, series in hists.items()}
    # Cached prompt tokens: the counter appears at the first cache hit, so while the server
    # reports its hit rate and none happened, the count is 0.
    prefix_hits = sums.get("cached_tokens", 0.0 if "hit_rate_now" in sums else None)
    return EngineSample(
        observed_at,
        model_name=next(iter(models)) if len(models) == 1 else None,
        model_names=tuple(sorted(models)),
        running=sums.get("running"),
        waiting=sums.get("waiting"),
        # Its queue waits for the scheduler's capacity (running slots or KV memory) alone:
        # requests waiting on a grammar have a queue of their own, not read.
        waiting_capacity=sums.get("waiting"),
        kv_usage=_kv_usage(ranks),
        prefix_queries=sums.get("prompt_tokens") if prefix_hits is not None else None,
        prefix_hits=prefix_hits,
        preemptions=_retractions(sums),
        generation_tokens=sums.get("generation_tokens"),
        prompt_tokens=sums.get("prompt_tokens"),
        requests_finished=sums.get("requests_finished"),
        # Counted as the passes run; the request counters above only when a request ends.
        steps=sums.get("steps"),
        step_generated=sums.get("step_generated"),
        step_prefilled=sums.get("step_prefilled"),
        ttft=merged.get("ttft"),
        tpot=merged.get("tpot") or merged.get("itl"),
        queue_time=merged.get("queue_time"),
        prefill_time=merged.get("prefill_time"),
        prompt_len=merged.get("prompt_len"),
        output_len=merged.get("output_len"),
        serving=_serving(ranks, sums),
        engines=len(dp_ranks),
    )


def _kv_usage(ranks: dict[str, dict[str, float]]) -> float | None:
    """The fullest rank's share of its KV pool: exact from the token counts (``token_usage``
    is rounded to two decimals), else ``token_usage``."""
    used, total = ranks.get("kv_used", {}), ranks.get("kv_total", {})
    exact = [used[r] / total[r] for r in used if total.get(r)]
    if exact:
        return max(exact)
    rounded = ranks.get("token_usage", {})
    return max(rounded.values()) if rounded else None


def _retractions(sums: dict[str, float]) -> float | None:
    """Retracted requests, SGLang's preemptions: the counter appears at the first retraction,
    so while the server says it counts them (the gauge) and none happened, the count is 0."""
    if "retractions" in sums:
        return sums["retractions"]
    return 0.0 if "retracted_now" in sums else None


def _serving(ranks: dict[str, dict[str, float]], sums: dict[str, float]) -> ServingConfig:
    totals = ranks.get("kv_total", {})
    settings: dict[str, str] = {
        k: f"{sums[k]:g}" for k in ("page_size", "context_len") if k in sums
    }
    return ServingConfig(settings=settings,
                         kv_capacity_tokens=max(totals.values()) if totals else None)  # fmt: skip


# The reasons only this parser gives (the bounds' and text format's are every engine's).
BODY_REASONS = ("truncated", "negative", "duplicate_series", "bad_histogram", "no_sglang_metrics",
                "malformed", "non_finite")  # fmt: skip
READS = tuple(_SCALARS) + tuple(_HISTOGRAMS)
