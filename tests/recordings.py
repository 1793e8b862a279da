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


def trimmed(src: Path, dst: Path, source: str, names: frozenset[str]) -> None:
    """``src`` with each ``source`` body cut to the samples named in ``names`` (a histogram's
    family name keeps its buckets, sum and count) and their HELP and TYPE lines: what the
    engine's parser reads, so the cut recording answers the same, at a fraction of the size."""

    def family(name: str) -> str:
        for sfx in ("_bucket", "_sum", "_count"):
            if name.endswith(sfx) and name[: -len(sfx)] in names:
                return name[: -len(sfx)]
        return name

    with gzip.open(src, "rt", encoding="utf-8") as f, gzip.open(dst, "wt", encoding="utf-8") as out:
        for line in f:
            entry = json.loads(line)
            if entry.get("source") == source and isinstance(entry.get("body"), str):
                kept = []
                for x in entry["body"].splitlines():
                    if x.startswith("# "):
                        parts = x.split(" ")
                        keep = len(parts) > 2 and family(parts[2]) in names
                    else:
                        keep = family(x.split("{")[0].split(" ")[0]) in names
                    if keep:
                        kept.append(x)
                entry["body"] = "\n".join(kept) + "\n"
            out.write(json.dumps(entry, separators=(",", ":")) + "\n")


SGLANG_ORDER = ("1-idle", "run1-2-busy-running1", "run1-3-after", "2-busy", "3-after")


def sglang_recording(path: Path, model: str = "tiny-llama", seconds: float = 20.0) -> None:
    """Real bodies of one SGLang process (tests/fixtures/sglang), in the order they were taken,
    polled every 250 ms for ``seconds`` in all (each body for an equal stretch: its counters
    stand still within it), the served model's name replaced."""
    from exporter.recording import RecordingWriter

    fixtures = Path(__file__).parent / "fixtures" / "sglang"
    bodies = [(fixtures / f"sglang0523-cpu-{name}.txt").read_text() for name in SGLANG_ORDER]
    bodies = [b.replace('model_name="tiny-llama"', f'model_name="{model}"') for b in bodies]
    per_body = max(1, round(seconds / 0.25 / len(bodies)))
    t = 1_800_000_000.0
    writer = RecordingWriter(path, {"exporter_version": "test", "engine": "sglang"})
    models = {"data": [{"id": model, "root": f"/models/{model}", "max_model_len": 1024}]}
    writer.write({"t": t, "source": "sglang_models", "body": json.dumps(models)})
    for body in bodies:
        for _ in range(per_body):
            writer.write({"t": t, "source": "sglang", "body": body})
            t += 0.25
    writer.close()
