"""What configuration a server runs, as far as anyone can tell from outside: its identity.

Two pods, or one process before and after a restart, serve the same configuration when they
serve the same models with the same vLLM cache configuration (every ``cache_config_info`` label
but the block counts vLLM measures at start, which vary from one start to the next), the same
data-parallel engines, the same settings declared to the exporter (``--max-num-seqs``, TP, PP,
weight format, parameters) and the same revision, an opaque label the deployment may give (the
chart passes the pod template's hash, which changes with every change to the pod's spec).

The identity is a short hash, exported as ``vllm_profile_info{config_id}``: Prometheus compares
the servers of one model before and after a rollout by it, and a restart that keeps it is a
restart, not a configuration change.

>>> a = config_id(("m",), {"block_size": "16", "num_gpu_blocks": "9271"}, 1, {"max_num_seqs": "8"})
>>> b = config_id(("m",), {"block_size": "16", "num_gpu_blocks": "9268"}, 1, {"max_num_seqs": "8"})
>>> a == b, a == config_id(("m",), {"block_size": "32"}, 1, {"max_num_seqs": "8"}), len(a)
(True, False, 12)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

# Measured by vLLM at each start from free memory (or derived from it): not configuration.
MEASURED = frozenset({"num_gpu_blocks", "num_cpu_blocks", "kv_cache_size_tokens",
                      "kv_cache_max_concurrency", "engine"})  # fmt: skip


def visible(cache_config: Mapping[str, str]) -> dict[str, str]:
    """The cache configuration labels that are settings, not measurements."""
    return {k: v for k, v in cache_config.items() if k not in MEASURED}


def config_id(
    model_names: Sequence[str],
    cache_config: Mapping[str, str],
    engines: int,
    declared: Mapping[str, str],
) -> str:
    """The identity: 12 hex digits, the same for the same configuration wherever it runs."""
    parts = {
        "models": sorted(model_names),
        "cache": sorted(visible(cache_config).items()),
        "engines": max(1, engines),
        "declared": sorted(declared.items()),
    }
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]
