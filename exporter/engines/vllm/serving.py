"""Pure: what vLLM states of its configuration (``cache_config_info``'s labels), typed."""

from __future__ import annotations

import math

from exporter.samples import ServingConfig

# Measured by vLLM at each start from free memory (or derived from it): not settings.
MEASURED = frozenset({"num_gpu_blocks", "num_cpu_blocks", "kv_cache_size_tokens",
                      "kv_cache_max_concurrency", "engine"})  # fmt: skip


def _number(labels: dict[str, str], key: str) -> float | None:
    try:
        v = float(labels[key])
    except (KeyError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def serving_config(labels: dict[str, str]) -> ServingConfig:
    """``cache_config_info``'s labels, typed: the KV pool is ``kv_cache_size_tokens``, else
    ``num_gpu_blocks`` x ``block_size``.

    >>> c = serving_config({"num_gpu_blocks": "12", "block_size": "128", "cache_dtype": "auto"})
    >>> c.kv_capacity_tokens, c.cache_dtype, dict(c.settings)
    (1536.0, 'auto', {'block_size': '128', 'cache_dtype': 'auto'})
    """
    capacity = _number(labels, "kv_cache_size_tokens")
    if capacity is None:
        blocks, size = _number(labels, "num_gpu_blocks"), _number(labels, "block_size")
        capacity = blocks * size if blocks is not None and size is not None else None
    return ServingConfig(
        settings={k: v for k, v in labels.items() if k not in MEASURED},
        kv_capacity_tokens=capacity,
        prefix_caching={"True": True, "False": False}.get(labels.get("enable_prefix_caching", "")),
        gpu_memory_utilization=_number(labels, "gpu_memory_utilization"),
        cache_dtype=labels.get("cache_dtype") or None,
    )
