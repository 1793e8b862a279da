"""Pure: the per-poll figures of a vLLM body, found by name instead of reading every line.

A window's counters and histograms count only at its first and last polls, which are read whole
(:func:`~exporter.engines.vllm.parse.parse_vllm_metrics`); the polls between them need only what
every poll shows: running, waiting, KV usage, preemptions, generated tokens, the process start
time, the model names and the engines. bench/ measures both reads.
"""

from __future__ import annotations

from dataclasses import replace

from exporter.engines.vllm.parse import parse_vllm_metrics
from exporter.samples import EngineSample
from exporter.scrape.text_format import ParseError, family_lines

_PER_POLL = (("process_start_time_seconds",), ("vllm:num_requests_running",),
             ("vllm:num_requests_waiting",), ("vllm:num_requests_waiting_by_reason",),
             ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
             ("vllm:num_preemptions_total",), ("vllm:generation_tokens_total",))  # fmt: skip
# Each group's names in both spellings, worked out once rather than at every poll.
_PER_POLL_SPELLINGS = tuple(
    tuple(s for n in names for s in ((n, "vllm_" + n[5:]) if n[:5] == "vllm:" else (n,)))
    for names in _PER_POLL
)


def parse_vllm_poll(body: str, observed_at: float) -> EngineSample:
    """Decode only what every poll needs (running, waiting, KV usage, preemptions, generated
    tokens, the process start time, the model name and the engines), the sample marked
    incomplete: a window's first and last polls are parsed whole (:func:`parse_vllm_metrics`),
    those between need no more. Each family is found by searching for its name instead of
    reading every line (bench/ measures both). Lines not read are not checked: a broken
    histogram shows at the next window edge, within one window."""
    if body and not body.endswith("\n"):
        raise ParseError("truncated", "body does not end with a newline")
    picked: list[str] = []
    start = 0
    for spellings in _PER_POLL_SPELLINGS:
        for name in spellings:
            found = family_lines(body, name, start)
            if found is not None:
                picked += found[0]
                start = found[1]
                break
    if not picked:
        raise ParseError("no_vllm_metrics", "body holds none of the vLLM families read")
    return replace(parse_vllm_metrics("\n".join(picked) + "\n", observed_at), complete=False)
