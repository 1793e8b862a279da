"""I/O half of an engine source: GET its ``/metrics`` (and its models endpoint when asked) from
one server, read with the engine's own parsers (its :class:`~exporter.scrape.source.Engine`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from exporter.samples import PollError
from exporter.scrape.http_get import FetchError, HttpGetter, Target, parse_target
from exporter.scrape.openai_models import MAX_MODELS_BODY
from exporter.scrape.source import Engine, EnginePoll
from exporter.scrape.text_format import ParseError

__all__ = ["EngineFetcher", "EnginePoll", "FetchError", "engine_targets", "split_metrics_url"]

log = logging.getLogger(__name__)

ACCEPT = "text/plain;version=0.0.4"
DEFAULT_MAX_BODY = 8 * 1024 * 1024  # a vLLM 0.33 body with 8 DP engines is well under 1 MB


def split_metrics_url(url: str, metrics_path: str = "/metrics") -> tuple[str, str]:
    """Accept a base URL or one already ending in the metrics path → (base, metrics URL).

    >>> split_metrics_url("http://h:8000/metrics")
    ('http://h:8000', 'http://h:8000/metrics')
    >>> split_metrics_url("http://h:8000/")
    ('http://h:8000', 'http://h:8000/metrics')
    """
    base = url.strip().rstrip("/")
    if base.endswith(metrics_path):
        base = base[: -len(metrics_path)]
    return base, base + metrics_path


def engine_targets(url: str, engine: Engine) -> tuple[Target, Target]:
    """(the metrics target, the models target); ValueError says what is wrong."""
    base, metrics = split_metrics_url(url, engine.metrics_path)
    return parse_target(metrics), parse_target(base + engine.models_path)


class EngineFetcher:
    """Reads one server of ``engine``'s kind. ``clock`` is the wall clock used to timestamp a poll
    on completion; ``deadline`` bounds each whole exchange (connect, headers, body)."""

    def __init__(
        self,
        engine: Engine,
        url: str,
        *,
        deadline: float,
        clock: Callable[[], float],
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        metrics, models = engine_targets(url, engine)
        self.engine = engine
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
        """One poll of the metrics (then the models if asked and the server answered); never
        raises for anything the server does."""
        try:
            body = self._text()
            observed = self._clock()
            parse = self.engine.parse_metrics if complete else self.engine.parse_poll
            sample = parse(body, observed)
        except (FetchError, ParseError) as e:
            return EnginePoll(PollError(self._clock(), e.reason, e.detail))
        if not want_models:
            return EnginePoll(sample, body)
        text = self._models_text()
        models = None if text is None else self.engine.parse_models(text, self._clock())
        return EnginePoll(sample, body, models, text if models is not None else None)

    def _models_text(self) -> str | None:
        try:
            text = self._text(self._models_path)
        except FetchError as e:
            log.debug("GET %s failed: %s", self._models_path, e)
            return None
        return text if len(text) <= MAX_MODELS_BODY else None

    def close(self) -> None:
        self._metrics.close()
