"""I/O half of the vLLM source: GET ``/metrics`` (and ``/v1/models`` when asked) from one vLLM."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from exporter.samples import ModelsInfo, PollError
from exporter.scrape.http_get import FetchError, HttpGetter, Target, parse_target
from exporter.scrape.source import EnginePoll
from exporter.scrape.vllm_parse import ParseError, parse_vllm_metrics, parse_vllm_poll

__all__ = ["EnginePoll", "FetchError", "VllmFetcher", "parse_models", "split_vllm_url"]

log = logging.getLogger(__name__)

ACCEPT = "text/plain;version=0.0.4"
DEFAULT_MAX_BODY = 8 * 1024 * 1024  # a 0.33 body with 8 DP engines is well under 1 MB
MAX_MODELS_BODY = 1024 * 1024
MAX_NAME = 512  # a model id or root longer than this is cut: it only feeds matching and a label


def split_vllm_url(url: str) -> tuple[str, str]:
    """Accept a base URL or one already ending in ``/metrics`` → (base, metrics URL).

    >>> split_vllm_url("http://h:8000/metrics")
    ('http://h:8000', 'http://h:8000/metrics')
    >>> split_vllm_url("http://h:8000/")
    ('http://h:8000', 'http://h:8000/metrics')
    """
    base = url.strip().rstrip("/")
    if base.endswith("/metrics"):
        base = base[: -len("/metrics")]
    return base, base + "/metrics"


def vllm_target(url: str) -> tuple[Target, Target]:
    """(the /metrics target, the /v1/models target); ValueError says what is wrong."""
    base, metrics = split_vllm_url(url)
    return parse_target(metrics), parse_target(base + "/v1/models")


class VllmFetcher:
    """Reads vLLM. ``clock`` is the wall clock used to timestamp a poll on completion;
    ``deadline`` bounds each whole exchange (connect, headers, body)."""

    def __init__(
        self,
        url: str,
        *,
        deadline: float,
        clock: Callable[[], float],
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        metrics, models = vllm_target(url)
        self.shown = metrics.shown
        self._metrics = HttpGetter(metrics, deadline=deadline, max_body=max_body, accept=ACCEPT)
        # Same origin and connection; only the path differs.
        self._models_path = models.path
        self._clock = clock

    @property
    def deadline(self) -> float:
        return self._metrics.deadline

    def _text(self, path: str | None = None) -> str:
        data = self._metrics.get(path)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FetchError("malformed", f"body is not UTF-8 (byte {e.start})") from None

    def poll(self, want_models: bool = False, complete: bool = True) -> EnginePoll:
        """One poll of ``/metrics`` (then ``/v1/models`` if asked and vLLM answered); never
        raises for anything vLLM does."""
        try:
            body = self._text()
            observed = self._clock()
            parse = parse_vllm_metrics if complete else parse_vllm_poll
            sample = parse(body, observed)
        except (FetchError, ParseError) as e:
            return EnginePoll(PollError(self._clock(), e.reason, e.detail))
        if not want_models:
            return EnginePoll(sample, body)
        text = self._models_text()
        models = None if text is None else parse_models(text, self._clock())
        return EnginePoll(sample, body, models, text if models is not None else None)

    def _models_text(self) -> str | None:
        try:
            text = self._text(self._models_path)
        except FetchError as e:
            log.debug("GET /v1/models failed: %s", e)
            return None
        return text if len(text) <= MAX_MODELS_BODY else None

    def close(self) -> None:
        self._metrics.close()


def parse_models(text: str, observed_at: float) -> ModelsInfo | None:
    """Pure: the ``/v1/models`` JSON → ModelsInfo (max over served models' ``max_model_len``,
    and each served name's ``root``: what a ``--served-model-name`` alias stands for).

    >>> body = '{"data": [{"id": "chat", "root": "meta-llama/Llama-3.1-8B", "max_model_len": 99}]}'
    >>> info = parse_models(body, 0.0)
    >>> info.max_model_len, info.roots
    (99, (('chat', 'meta-llama/Llama-3.1-8B'),))
    """
    try:
        doc = json.loads(text)
        data = doc["data"]
        ids = tuple(str(m["id"]) for m in data)
        lens = [m.get("max_model_len") for m in data]
        roots = tuple(
            (str(m["id"])[:MAX_NAME], m["root"][:MAX_NAME])
            for m in data
            if isinstance(m.get("root"), str) and m["root"]
        )
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    good = [n for n in lens if isinstance(n, int) and not isinstance(n, bool) and 0 < n < 1 << 31]
    return ModelsInfo(observed_at, max(good) if good else None, ids, roots)
