"""Recordings derived from the real fixtures, for tests and benchmarks that need more GPUs, a
longer span or another model name than a capture holds. Every value comes from a real capture."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from tests.paths import H200


def gpu_recording(
    path: Path, gpus: int, *, probe: Path = H200, seconds: float = 3600.0, step: float = 0.25
) -> None:
    """``gpus`` GPUs, each reading what the probe's one GPU read (its readings repeated in
    order), every ``step`` seconds for ``seconds``."""
    with gzip.open(probe, "rt") as f:
        rows = [e for e in map(json.loads, f) if e.get("source") == "nvml"]
    with gzip.open(path, "wt") as out:
        for i in range(int(seconds / step)):
            g = rows[i % len(rows)]["gpus"][0]
            entry = {
                "t": i * step,
                "source": "nvml",
                "gpus": [{**g, "index": k, "uuid": f"GPU-{k:04d}"} for k in range(gpus)],
            }
            out.write(json.dumps(entry) + "\n")


def renamed(src: Path, dst: Path, model: str, served: str = "tiny-llama") -> None:
    """A vLLM recording with the served model's name replaced in every body (the label value
    only: a fleet of one capture under several models' names)."""
    old, new = f'model_name="{served}"', f'model_name="{model}"'
    with gzip.open(src, "rt") as f, gzip.open(dst, "wt", compresslevel=1) as out:
        for line in f:
            entry = json.loads(line)
            if isinstance(entry.get("body"), str):
                entry["body"] = entry["body"].replace(old, new)
            out.write(json.dumps(entry) + "\n")
