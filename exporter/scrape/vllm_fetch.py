"""I/O half of the vLLM source: GET ``/metrics`` and ``/v1/models`` over one keep-alive session."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import requests

from exporter.samples import ModelsInfo, PollError, VllmSample
from exporter.scrape.vllm_parse import ParseError, parse_vllm_metrics

log = logging.getLogger(__name__)

ACCEPT = "text/plain;version=0.0.4"
DEFAULT_MAX_BODY = 8 * 1024 * 1024  # a 0.33 body with 8 DP engines is well under 1 MB


class FetchError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def split_vllm_url(url: str) -> tuple[str, str]:
    """Accept a base URL or one already ending in ``/metrics`` → (base, metrics URL).

    >>> split_vllm_url("http://h:8000/metrics")
    ('http://h:8000', 'http://h:8000/metrics')
    >>> split_vllm_url("http://h:8000/")
    ('http://h:8000', 'http://h:8000/metrics')
    """
    base = url.rstrip("/")
    if base.endswith("/metrics"):
        base = base[: -len("/metrics")]
    return base, base + "/metrics"


class VllmFetcher:
    """Reads vLLM. ``clock`` is the wall clock used to timestamp a poll on completion."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        clock: Callable[[], float],
        max_body: int = DEFAULT_MAX_BODY,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url, self.metrics_url = split_vllm_url(url)
        self.timeout = timeout
        self.max_body = max_body
        self._clock = clock
        self._session = session or requests.Session()
        self._session.headers.update({"Accept": ACCEPT, "Accept-Encoding": "identity"})
        self._session.trust_env = False  # never route through an environment proxy
        self.last_body: str | None = None  # the raw text of the last poll, for `record`
        self.last_models_body: str | None = None
        # Each URL's GET is prepared once: the same request four times a second need not be
        # rebuilt each time (URL parsing and header merging were a third of its CPU).
        self._prepared: dict[str, requests.PreparedRequest] = {}

    def _get(self, url: str) -> str:
        # `timeout` bounds each socket wait; the deadline bounds a body that trickles in.
        deadline = time.monotonic() + self.timeout
        try:
            prepared = self._prepared.get(url)
            if prepared is None:
                prepared = self._session.prepare_request(requests.Request("GET", url))
                self._prepared[url] = prepared
            with self._session.send(prepared, timeout=self.timeout, stream=True) as resp:
                if resp.status_code != 200:
                    raise FetchError("http_status", f"HTTP {resp.status_code} from {url}")
                ctype = resp.headers.get("Content-Type", "")
                if "html" in ctype:
                    raise FetchError("bad_content_type", f"{ctype!r} from {url}")
                chunks: list[bytes] = []
                size = 0
                # read1 returns whatever has arrived, so the deadline is checked while a slow
                # body trickles in (iter_content would block until a full chunk or the end).
                while chunk := resp.raw.read1(65536):
                    size += len(chunk)
                    if time.monotonic() > deadline:
                        raise FetchError("timeout", f"body from {url} took over {self.timeout}s")
                    if size > self.max_body:
                        raise FetchError("body_too_large", f"over {self.max_body} bytes from {url}")
                    chunks.append(chunk)
        except requests.Timeout:
            raise FetchError("timeout", f"no answer from {url} in {self.timeout}s") from None
        except requests.ConnectionError as e:
            raise FetchError("connection", f"{url}: {type(e).__name__}") from None
        except requests.RequestException as e:
            raise FetchError("request", f"{url}: {e}") from None
        try:
            return b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError:
            raise FetchError("malformed", f"body from {url} is not UTF-8") from None

    def poll(self) -> VllmSample | PollError:
        """One poll of ``/metrics``; never raises for anything vLLM does."""
        try:
            body = self._get(self.metrics_url)
            observed = self._clock()
            self.last_body = body
            return parse_vllm_metrics(body, observed)
        except (FetchError, ParseError) as e:
            self.last_body = None
            return PollError(self._clock(), e.reason, e.detail)

    def models(self) -> ModelsInfo | None:
        """``GET /v1/models`` for ``max_model_len``; None when the endpoint does not answer."""
        try:
            text = self._get(self.base_url + "/v1/models")
        except FetchError as e:
            log.debug("GET /v1/models failed: %s", e)
            return None
        self.last_models_body = text
        return parse_models(text, self._clock())


def parse_models(text: str, observed_at: float) -> ModelsInfo | None:
    """Pure: the ``/v1/models`` JSON → ModelsInfo (max over served models' ``max_model_len``)."""
    try:
        doc = json.loads(text)
        data = doc["data"]
        ids = tuple(str(m["id"]) for m in data)
        lens = [int(m["max_model_len"]) for m in data if m.get("max_model_len") is not None]
    except (ValueError, KeyError, TypeError):
        return None
    return ModelsInfo(observed_at, max(lens) if lens else None, ids)
