"""The recording format (docs/design.md): JSON Lines, optionally gzip, one object per raw poll.

    {"recording": 1, "exporter_version": "…", "config": {…}}          (optional header)
    {"t": 1795771503.25, "source": "vllm", "body": "<text as received>"}
    {"t": 1795771503.25, "source": "vllm", "error": "timeout"}
    {"t": 1795771503.26, "source": "nvml", "gpus": [{"index": 0, "uuid": "GPU-…", …}]}
    {"t": 1795771503.25, "source": "vllm_models", "body": "<GET /v1/models JSON>"}

A GPU field NVML could not read is omitted, never written as 0.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from exporter.samples import GpuReading, GpuSample, PollError, plausible

GPU_SOURCES = ("nvml", "dcgm")


class RecordingError(ValueError):
    """A recording that cannot be read; the message names the file and line."""


# A line holds one poll: a body of at most 8 MiB, escaped for JSON (a few bytes a character at
# worst). A longer line is no recording of ours, and is not read whole to find that out.
MAX_LINE_CHARS = 48 * 1024 * 1024


def _open_text(path: Path, mode: str) -> IO[str]:
    if mode == "w" and path.is_fifo():
        # Opening a FIFO no process reads blocks until one does (a SIGTERM waits with it):
        # find out at once instead.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as e:
            if e.errno == errno.ENXIO:
                raise OSError(errno.ENXIO, f"{path}: no process is reading this FIFO") from None
            raise
    if mode == "r":
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
    else:
        gz = path.suffix == ".gz"
    if gz:
        text: IO[str] = gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[assignment]
        return text
    return open(path, mode, encoding="utf-8")


@dataclass
class Damage:
    """Where a recording stopped being readable: a recording cut short (the recorder was killed,
    the disk filled) ends in a partial line or an unfinished gzip stream. Every entry before
    that is used; this says what was dropped."""

    where: str | None = None
    dropped_lines: int = 0

    def __str__(self) -> str:
        return f"{self.where}; {self.dropped_lines} partial line(s) dropped"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _lines(path: Path, damage: Damage) -> Iterator[tuple[int, str]]:
    """(line number, text) in file order; an unfinished gzip stream ends the iteration and is
    noted in ``damage``."""
    n = 0
    try:
        with _open_text(path, "r") as f:
            while line := f.readline(MAX_LINE_CHARS + 1):
                n += 1
                if len(line) > MAX_LINE_CHARS:
                    raise RecordingError(f"{path}:{n}: a line over {MAX_LINE_CHARS} characters")
                yield n, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        damage.where = f"{path}: compressed data ends early after line {n} ({e})"
        damage.dropped_lines = 1


def read_entries(path: Path, damage: Damage | None = None) -> Iterator[dict[str, Any]]:
    """Poll entries in file order (the header skipped). A bad line raises RecordingError; a
    damaged tail (see :class:`Damage`) ends the entries and is noted in ``damage``."""
    damage = damage if damage is not None else Damage()
    try:
        for n, line in _lines(path, damage):
            if not line.strip():
                continue
            try:
                obj = json.loads(line, parse_constant=_reject_constant)
            except (ValueError, RecursionError) as e:
                if not line.endswith("\n"):  # the last line, cut short
                    damage.where = f"{path}:{n}: the last line is cut short"
                    damage.dropped_lines = 1
                    return
                raise RecordingError(f"{path}:{n}: not JSON: {e}") from None
            if not isinstance(obj, dict):
                raise RecordingError(f"{path}:{n}: expected a JSON object")
            if "recording" in obj and n == 1:
                continue
            t, source = obj.get("t"), obj.get("source")
            if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t < 1e11:
                raise RecordingError(f"{path}:{n}: 't' must be a Unix time in seconds")
            if not isinstance(source, str):
                raise RecordingError(f"{path}:{n}: 'source' must be a string")
            if "error" in obj and not isinstance(obj["error"], str):
                raise RecordingError(f"{path}:{n}: 'error' must be a string")
            if "body" in obj and not isinstance(obj["body"], str):
                raise RecordingError(f"{path}:{n}: 'body' must be a string")
            obj["_line"] = n
            yield obj
    except (OSError, UnicodeDecodeError) as e:
        raise RecordingError(f"{path}: cannot read: {e}") from None


_GPU_FIELDS: dict[str, tuple[str, float]] = {
    # recording key -> (GpuReading field, scale to the reading's unit)
    "util_gpu": ("util_gpu_pct", 1.0),
    "util_mem": ("util_mem_pct", 1.0),
    "power_mw": ("power_watts", 1e-3),
    "power_limit_mw": ("power_limit_watts", 1e-3),
    "mem_used_bytes": ("mem_used_bytes", 1.0),
    "mem_total_bytes": ("mem_total_bytes", 1.0),
    "temperature_c": ("temperature_c", 1.0),
    "sm_clock_mhz": ("sm_clock_mhz", 1.0),
    "energy_mj": ("energy_mj", 1.0),
}


_GPU_FIELD_ITEMS = tuple((key, attr, scale) for key, (attr, scale) in _GPU_FIELDS.items())
_NUMBERS = (int, float)


def gpu_sample_from_entry(entry: dict[str, Any], observed_at: float) -> GpuSample | PollError:
    """An ``nvml``/``dcgm`` entry → GpuSample (or the PollError it recorded)."""
    if "error" in entry:
        return PollError(observed_at, str(entry["error"]), "recorded error")
    gpus = entry.get("gpus")
    where = f"line {entry.get('_line', '?')}"
    if not isinstance(gpus, list):
        raise RecordingError(f"{where}: 'gpus' must be a list")
    readings = []
    for g in gpus:
        if not isinstance(g, dict) or not isinstance(g.get("index"), int):
            raise RecordingError(f"{where}: each GPU needs an integer 'index'")
        values: dict[str, Any] = {}
        for key, attr, scale in _GPU_FIELD_ITEMS:  # every replayed poll, every GPU
            v = g.get(key)
            if v is None:
                continue
            if type(v) not in _NUMBERS or v != v or v < 0:  # a bool's type is bool: refused
                raise RecordingError(f"{where}: GPU {g['index']} '{key}' must be a number ≥ 0")
            values[attr] = float(v) * scale
        gpm = g.get("gpm")
        if isinstance(gpm, dict) and isinstance(gpm.get("dram_bw_util"), (int, float)):
            values["dram_bw_util_pct"] = float(gpm["dram_bw_util"])
        # Out-of-range values (an infinity, a sentinel) are left out, as a live reading's are.
        readings.append(
            plausible(
                GpuReading(
                    index=g["index"],
                    uuid=str(g["uuid"]) if "uuid" in g else f"GPU-{g['index']}",
                    name=g.get("name") if isinstance(g.get("name"), str) else None,
                    **values,
                )
            )
        )
    return GpuSample(observed_at, tuple(readings))


def gpu_entry(sample: GpuSample | PollError, source: str = "nvml") -> dict[str, Any]:
    """The inverse of :func:`gpu_sample_from_entry`, for ``record``."""
    if isinstance(sample, PollError):
        return {"t": sample.observed_at, "source": source, "error": sample.reason}
    gpus = []
    for r in sample.gpus:
        g: dict[str, Any] = {"index": r.index, "uuid": r.uuid}
        if r.name is not None:
            g["name"] = r.name
        for key, (attr, scale) in _GPU_FIELDS.items():
            v = getattr(r, attr)
            if v is not None:
                g[key] = round(v / scale) if scale != 1.0 else v
        if r.dram_bw_util_pct is not None:
            g["gpm"] = {"dram_bw_util": r.dram_bw_util_pct}
        gpus.append(g)
    return {"t": sample.observed_at, "source": source, "gpus": gpus}


class RecordingWriter:
    """Appends entries as JSON Lines; gzip when the file name ends in ``.gz``.

    The stream is flushed at least every ``flush_every`` seconds (a gzip sync point), so a
    recorder killed without warning still leaves everything up to the last flush readable.
    A failed write (a full disk) raises OSError; the caller stops recording.
    """

    def __init__(
        self,
        path: Path,
        header: dict[str, Any],
        flush_every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._f = _open_text(path, "w")
        self._clock, self._every = clock, flush_every
        self._flushed = clock()
        self.write({"recording": 1, **header})

    def write(self, entry: dict[str, Any]) -> None:
        self._f.write(json.dumps(entry, separators=(",", ":"), allow_nan=False) + "\n")
        if self._clock() - self._flushed >= self._every:
            self._f.flush()
            self._flushed = self._clock()

    def close(self) -> None:
        self._f.close()
