"""vLLM: its ``/metrics`` (format 0.0.4, both the ``vllm:`` and the escaped ``vllm_`` spelling,
releases 0.6 to 0.32) and its OpenAI-compatible ``/v1/models``."""

from __future__ import annotations

from exporter.engines.vllm.parse import BODY_REASONS, READS, parse_vllm_metrics
from exporter.engines.vllm.per_poll import parse_vllm_poll
from exporter.scrape.openai_models import parse_models
from exporter.scrape.source import Engine

ENGINE = Engine(
    kind="vllm",
    name="vLLM",
    parse_metrics=parse_vllm_metrics,
    parse_poll=parse_vllm_poll,
    parse_models=parse_models,
    body_reasons=BODY_REASONS,
    reads=READS,
)
