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
from exporter.scrape.text_format import ParseError

_PER_POLL = (("process_start_time_seconds",), ("vllm:num_requests_running",),
             ("vllm:num_requests_waiting",), ("vllm:num_requests_waiting_by_reason",),
             ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
             ("vllm:num_preemptions_total",), ("vllm:generation_tokens_total",))  # fmt: skip
# Each group's names in both spellings, worked out once rather than at every poll.
_PER_POLL_SPELLINGS = tuple(
    tuple(s for n in names for s in ((n, "vllm_" + n[5:]) if n[:5] == "vllm:" else (n,)))
    for names in _PER_POLL
)


def _find_family(body: str, name: str, start: int, stop: int) -> int:
    """Where the first sample line of family ``name`` starts in ``body[start:stop]``, or -1."""
    at = start - 1
    while (at := body.find(name, at + 1, stop)) != -1:
        end = at + len(name)
        if (at == 0 or body[at - 1] == "\n") and body[end : end + 1] in ("{", " "):
            return at
    return -1


def _family_lines(body: str, name: str, start: int) -> tuple[list[str], int] | None:
    """The sample lines of family ``name`` (a family's lines are consecutive in the text
    format) and where they end: searched from ``start`` on, then before it."""
    at = _find_family(body, name, start, len(body))
    if at == -1 and start > 0:
        at = _find_family(body, name, 0, start + len(name))
    if at == -1:
        return None
    lines = []
    end = len(name)
    while body.startswith(name, at) and body[at + end : at + end + 1] in ("{", " "):
        nl = body.find("\n", at)
        lines.append(body[at:nl])  # the body ends with a newline: checked first
        at = nl + 1
    return lines, at


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
            found = _family_lines(body, name, start)
            if found is not None:
                picked += found[0]
                start = found[1]
                break
    if not picked:
        raise ParseError("no_vllm_metrics", "body holds none of the vLLM families read")
    return replace(parse_vllm_metrics("\n".join(picked) + "\n", observed_at), complete=False)
