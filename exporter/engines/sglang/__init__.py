"""SGLang: its ``/metrics`` (``--enable-metrics``, every family ``sglang:``; read as
docs/sources.md#sglang says) and its OpenAI-compatible ``/v1/models``. Every poll is read whole:
a body is ~75 KB and a whole read costs about what vLLM's does (bench/)."""

from __future__ import annotations

from exporter.engines.sglang.parse import BODY_REASONS, READS, parse_sglang_metrics
from exporter.scrape.openai_models import parse_models
from exporter.scrape.source import Engine

ENGINE = Engine(
    kind="sglang",
    name="SGLang",
    parse_metrics=parse_sglang_metrics,
    parse_poll=parse_sglang_metrics,
    parse_models=parse_models,
    body_reasons=BODY_REASONS,
    reads=READS,
)
