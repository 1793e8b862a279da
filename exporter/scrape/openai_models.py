"""The OpenAI-compatible ``/v1/models`` answer most engines serve (vLLM, SGLang): which names a
server serves, what each stands for, and its context length. Pure."""

from __future__ import annotations

import json

from exporter.samples import ModelsInfo

MAX_MODELS_BODY = 1024 * 1024
MAX_NAME = 512  # a model id or root longer than this is cut: it only feeds matching and a label


def parse_models(text: str, observed_at: float) -> ModelsInfo | None:
    """The ``/v1/models`` JSON → ModelsInfo (max over served models' ``max_model_len``, and each
    served name's ``root``: what a ``--served-model-name`` alias stands for); None when it is not
    such a list.

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
