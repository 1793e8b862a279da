"""Serving, from vLLM's ``/metrics``: throughput, requests, KV cache, latency."""

from __future__ import annotations

from exporter.derive.rule_advice import scheduler_cap
from exporter.export.families.base import (
    ACTIVE,
    ENGINE,
    Family,
    View,
    _serving,
)


def _occupancy(v: View) -> float | None:
    running = v.snap.agg.running
    cap = scheduler_cap(v.settings.max_num_seqs, v.snap.agg.engines)
    return None if running is None or not cap else running / cap


FAMILIES: tuple[Family[View], ...] = (
    Family("generation_tokens_per_second", "gauge",
           "Generated tokens per second, time-weighted over the " + ACTIVE + " of the last {H}. "
           "From vllm:generation_tokens_total.", (), _serving(lambda a: a.generation_tps),
           needs=ENGINE),
    Family("prompt_tokens_per_second", "gauge",
           "Prompt tokens per second (cached included), over the active windows of the last {H}. "
           "From vllm:prompt_tokens_total.", (), _serving(lambda a: a.prompt_tps), needs=ENGINE),
    Family("requests_per_second", "gauge",
           "Finished requests per second, over the active windows of the last {H}. "
           "From vllm:request_success_total (all finished_reason).", (),
           _serving(lambda a: a.requests_per_second), needs=ENGINE),
    Family("finished_requests_ratio", "gauge",
           "Share of the requests finished in the evaluable windows of the last {H}, by vLLM's "
           "finished_reason (stop, length, abort, error, repetition). From "
           "vllm:request_success_total; vLLM 0.13 and later do not count client aborts.",
           ("finished_reason",),
           lambda v: sorted(((r,), x) for r, x in v.snap.agg.finished_ratio_by_reason.items()),
           needs=ENGINE),
    Family("preemptions_per_second", "gauge",
           "Preemptions per second, over the active windows of the last {H}. "
           "From vllm:num_preemptions_total.", (), _serving(lambda a: a.preemptions_per_second),
           needs=ENGINE),
    Family("engine_steps_per_second", "gauge",
           "Engine steps (scheduler iterations) per second, over the active windows of the last "
           "{H}. From the count of vllm:iteration_tokens_total (SGLang: its decode passes).", (),
           _serving(lambda a: a.engine_steps_per_second), needs=ENGINE),
    Family("decode_batch_per_step", "gauge",
           "Generated tokens per engine step over the active windows of the last {H}: the mean "
           "decode batch, from counters (requests_running is sampled at each poll). From "
           "vllm:generation_tokens_total and the count of vllm:iteration_tokens_total (SGLang: "
           "its decode tokens and passes).", (),
           _serving(lambda a: a.decode_batch_per_step), needs=ENGINE),
    Family("requests_running", "gauge",
           "Running requests, time-weighted mean over the evaluable windows of the last {H} "
           "(sampled every poll, so short bursts count). From vllm:num_requests_running.", (),
           _serving(lambda a: a.running), needs=ENGINE),
    Family("requests_waiting", "gauge",
           "Waiting requests, time-weighted mean over the evaluable windows of the last {H}. "
           "From vllm:num_requests_waiting.", (), _serving(lambda a: a.waiting), needs=ENGINE),
    Family("scheduler_occupancy_ratio", "gauge",
           "Running requests / (--max-num-seqs x data-parallel engines), over the evaluable "
           "windows of the last {H}.", (),
           lambda v: [((), _occupancy(v))], needs=ENGINE),
    Family("data_parallel_engines", "gauge",
           "vLLM data-parallel engines (the engine label's values on vllm:num_requests_running) "
           "in the latest evaluable window: the ceilings and the --max-num-seqs cap count each.",
           (), lambda v: [((), float(v.snap.agg.engines))] if v.snap.agg.engines > 0 else [],
           needs=ENGINE),
    Family("kv_cache_usage_mean_ratio", "gauge",
           "KV cache usage 0-1, time-weighted mean over the evaluable windows of the last {H}. "
           "From vllm:kv_cache_usage_perc (max over engines).", (),
           _serving(lambda a: a.kv_usage_mean), needs=ENGINE),
    Family("kv_cache_usage_peak_ratio", "gauge",
           "KV cache usage 0-1, the highest poll over the evaluable windows of the last {H} "
           "(catches spikes a 15 s scrape misses).", (), _serving(lambda a: a.kv_usage_peak),
           needs=ENGINE),
    Family("prefix_cache_hit_ratio", "gauge",
           "Prefix cache hits / queries (tokens) over the evaluable windows of the last {H}. "
           "From vllm:prefix_cache_hits_total and vllm:prefix_cache_queries_total.", (),
           _serving(lambda a: a.prefix_hit_ratio), needs=ENGINE),
    Family("time_to_first_token_mean_seconds", "gauge",
           "Time to first token, mean (sum delta / count delta) over the active windows of the "
           "last {H}. From vllm:time_to_first_token_seconds.", (),
           _serving(lambda a: a.ttft_mean), needs=ENGINE),
    Family("time_to_first_token_p99_seconds", "gauge",
           "Time to first token, 99th percentile over the active windows of the last {H}, "
           "interpolated from merged per-window bucket deltas (never an average of p99s).", (),
           _serving(lambda a: a.ttft_p99), needs=ENGINE),
    Family("time_per_output_token_mean_seconds", "gauge",
           "Time per output token, mean over the active windows of the last {H}. From "
           "vllm:request_time_per_output_token_seconds, else vllm:inter_token_latency_seconds.",
           (), _serving(lambda a: a.tpot_mean), needs=ENGINE),
    Family("time_per_output_token_p99_seconds", "gauge",
           "Time per output token, 99th percentile over the active windows of the last {H} (as "
           "for TTFT).", (), _serving(lambda a: a.tpot_p99), needs=ENGINE),
    Family("prefill_time_mean_seconds", "gauge",
           "Request prefill time, mean over the active windows of the last {H}. "
           "From vllm:request_prefill_time_seconds.", (), _serving(lambda a: a.prefill_time_mean),
           needs=ENGINE),
    Family("queue_time_mean_seconds", "gauge",
           "Request queue time, mean over the active windows of the last {H}. "
           "From vllm:request_queue_time_seconds.", (), _serving(lambda a: a.queue_time_mean),
           needs=ENGINE),
    Family("prompt_tokens_mean", "gauge",
           "Mean prompt length (tokens) of requests finished in the evaluable windows of the last "
           "{H}. From vllm:request_prompt_tokens.", (), _serving(lambda a: a.prompt_tokens_mean),
           needs=ENGINE),
)  # fmt: skip
