"""What configuration a server runs, as far as anyone can tell from outside: its identity.

Two pods, or one process before and after a restart, serve the same configuration when they
serve the same models with the same settings the engine states (vLLM: every ``cache_config_info``
label but the block counts it measures at start, which vary from one start to the next), the same
data-parallel engines, the same settings declared to the exporter (``--max-num-seqs``, TP, PP,
weight format, parameters) and the same revision, an opaque label the deployment may give (the
chart passes the pod template's hash, which changes with every change to the pod's spec).

The identity is a short hash, exported as ``vllm_profile_info{config_id}``: Prometheus compares
the servers of one model before and after a rollout by it, and a restart that keeps it is a
restart, not a configuration change.

>>> a = config_id(("m",), {"block_size": "16"}, 1, {"max_num_seqs": "8"})
>>> a == config_id(("m",), {"block_size": "16"}, 1, {"max_num_seqs": "8"}), len(a)
(True, 12)
>>> a == config_id(("m",), {"block_size": "32"}, 1, {"max_num_seqs": "8"})
False
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence


def config_id(
    model_names: Sequence[str],
    settings: Mapping[str, str],
    engines: int,
    declared: Mapping[str, str],
) -> str:
    """The identity: 12 hex digits, the same for the same configuration wherever it runs."""
    parts = {
        "models": sorted(model_names),
        "cache": sorted(settings.items()),
        "engines": max(1, engines),
        "declared": sorted(declared.items()),
    }
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]
