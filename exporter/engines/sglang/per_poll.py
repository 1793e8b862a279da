"""Pure: the per-poll figures of an SGLang body, found by name instead of reading every line.

As for vLLM (:mod:`exporter.engines.vllm.per_poll`): a window's counters and histograms count
only at its first and last polls, which are read whole; the polls between need running,
waiting, KV usage (its exact token counts), retractions, generated tokens and the model names.
The configuration SGLang states is left to the whole reads: a partial read that stated less
of it would look like another configuration.
"""

from __future__ import annotations

from dataclasses import replace

from exporter.engines.sglang.parse import parse_sglang_metrics
from exporter.samples import EngineSample, ServingConfig
from exporter.scrape.text_format import ParseError, family_lines

_PER_POLL = ("sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage",
             "sglang:kv_used_tokens", "sglang:max_total_num_tokens", "sglang:num_retracted_reqs",
             "sglang:num_retracted_requests_total", "sglang:generation_tokens_total")  # fmt: skip


def parse_sglang_poll(body: str, observed_at: float) -> EngineSample:
    """Decode only what every poll needs, the sample marked incomplete (see the module)."""
    if body and not body.endswith("\n"):
        raise ParseError("truncated", "body does not end with a newline")
    picked: list[str] = []
    start = 0
    for name in _PER_POLL:
        found = family_lines(body, name, start)
        if found is not None:
            picked += found[0]
            start = found[1]
    if not picked:
        raise ParseError("no_sglang_metrics", "body holds none of the SGLang families read")
    s = parse_sglang_metrics("\n".join(picked) + "\n", observed_at)
    return replace(s, serving=ServingConfig(), complete=False)
