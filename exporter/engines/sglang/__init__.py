"""SGLang: its ``/metrics`` (``--enable-metrics``, every family ``sglang:``; read as
docs/sources.md#sglang says) and its OpenAI-compatible ``/v1/models``. A window's edges are read
whole, the polls between them for the per-poll figures only, as vLLM's."""

from __future__ import annotations

from exporter.engines.sglang.parse import BODY_REASONS, READS, parse_sglang_metrics
from exporter.engines.sglang.per_poll import parse_sglang_poll
from exporter.scrape.openai_models import parse_models
from exporter.scrape.source import Engine

ENGINE = Engine(
    kind="sglang",
    name="SGLang",
    parse_metrics=parse_sglang_metrics,
    parse_poll=parse_sglang_poll,
    parse_models=parse_models,
    body_reasons=BODY_REASONS,
    reads=READS,
)
