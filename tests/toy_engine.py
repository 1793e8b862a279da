"""A toy inference engine, to prove the engine seam: everything the exporter needs to read an
engine it has never seen is this module, registered with one line in ``ENGINES``. Its status
answer is JSON, not Prometheus text (tests/fixtures/toy/status.json), so nothing of vLLM's
reading can be what reads it."""

from __future__ import annotations

import json
from dataclasses import replace

from exporter.samples import EngineSample
from exporter.scrape.openai_models import parse_models
from exporter.scrape.source import Engine
from exporter.scrape.text_format import ParseError


def parse_status(body: str, observed_at: float) -> EngineSample:
    try:
        doc = json.loads(body)
        counters = doc["counters"]
        return EngineSample(
            observed_at,
            model_name=str(doc["model"]),
            model_names=(str(doc["model"]),),
            running=float(doc["running"]),
            waiting=float(doc["waiting"]),
            kv_usage=float(doc["kv_used"]),
            generation_tokens=float(counters["generated"]),
            prompt_tokens=float(counters["prompt"]),
            requests_finished=float(counters["finished"]),
            preemptions=0.0,
            process_start_time=float(doc["started"]),
            engines=1,
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ParseError("no_toy_status", f"not a toy status: {e}") from None


def parse_status_poll(body: str, observed_at: float) -> EngineSample:
    return replace(parse_status(body, observed_at), complete=False)


ENGINE = Engine(
    kind="toy",
    name="Toy",
    parse_metrics=parse_status,
    parse_poll=parse_status_poll,
    parse_models=parse_models,
    body_reasons=("no_toy_status",),
    reads=("model", "running", "waiting", "kv_used", "started", "counters"),
    metrics_path="/status",
)
