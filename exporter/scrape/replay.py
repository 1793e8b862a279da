"""Sources that read recordings instead of live endpoints (SPEC §14).

``replay_ticks`` drives the pipeline in simulated time (the recorded timestamps); the two
``Replay*Source`` classes feed ``serve`` in real time, restamping each entry with the live clock.
Recordings are streamed, never loaded whole: a ten-hour recording holds gigabytes of bodies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from exporter.recording import (
    GPU_SOURCES,
    Damage,
    RecordingError,
    gpu_sample_from_entry,
    read_entries,
)
from exporter.samples import GpuSample, ModelsInfo, PollError, Tick, VllmSample
from exporter.scrape.vllm_fetch import VllmPoll, parse_models
from exporter.scrape.vllm_parse import ParseError, parse_vllm_metrics

T = TypeVar("T")


def vllm_result(entry: dict[str, Any], observed_at: float) -> VllmSample | PollError:
    if "error" in entry:
        return PollError(observed_at, str(entry["error"]), "recorded error")
    if "body" not in entry:
        raise RecordingError(
            f"line {entry.get('_line', '?')}: a vllm entry needs 'body' or 'error'"
        )
    try:
        return parse_vllm_metrics(entry["body"], observed_at)
    except ParseError as e:
        return PollError(observed_at, e.reason, e.detail)


def _vllm_stream(path: Path, damage: Damage) -> Iterator[tuple[dict[str, Any], ModelsInfo | None]]:
    models: ModelsInfo | None = None
    for e in read_entries(path, damage):
        if e["source"] == "vllm_models":
            models = parse_models(e.get("body", ""), float(e["t"])) or models
        elif e["source"] == "vllm":
            yield e, models
            models = None


def _gpu_stream(path: Path, damage: Damage) -> Iterator[dict[str, Any]]:
    return (e for e in read_entries(path, damage) if e["source"] in GPU_SOURCES)


def _has_source(path: Path, sources: tuple[str, ...]) -> bool:
    return any(e["source"] in sources for e in read_entries(path))


def replay_ticks(
    vllm_path: Path | None, gpu_path: Path | None = None, damage: list[Damage] | None = None
) -> Iterator[Tick]:
    """Ticks from recordings, in recorded time.

    The vLLM stream sets the pace and the end; a GPU stream from another file is shifted so its
    first entry lines up with the first vLLM entry. A stream that ends early reports
    ``recording_ended`` errors. With only a GPU recording, the GPU stream sets the pace. A
    recording with a damaged tail is used up to it; ``damage`` collects what was dropped.
    """
    vd, gd = Damage(), Damage()
    if damage is not None:
        damage += [vd, gd]
    if vllm_path is None and gpu_path is None:
        raise ValueError("nothing to replay")
    if gpu_path is None and vllm_path is not None and _has_source(vllm_path, GPU_SOURCES):
        gpu_path = vllm_path
    vllm_it = _vllm_stream(vllm_path, vd) if vllm_path is not None else None
    gpu_it = _gpu_stream(gpu_path, gd) if gpu_path is not None else None
    offset: float | None = 0.0 if gpu_path == vllm_path else None
    while True:
        v = next(vllm_it, None) if vllm_it is not None else None
        g = next(gpu_it, None) if gpu_it is not None else None
        if vllm_it is not None and v is None:
            return
        if vllm_it is None and g is None:
            return
        vllm: VllmSample | PollError | None = None
        models = None
        t: float | None = None
        if v is not None:
            entry, models = v
            t = float(entry["t"])
            vllm = vllm_result(entry, t)
        gpu: GpuSample | PollError | None = None
        if g is not None:
            gt = float(g["t"])
            if offset is None:
                offset = (t - gt) if t is not None else 0.0
            gpu = gpu_sample_from_entry(g, gt + offset)
        elif gpu_it is not None and t is not None:
            gpu = PollError(t, "recording_ended", "the GPU recording is shorter than vLLM's")
        yield Tick(vllm=vllm, gpu=gpu, models=models)


class _Looping:
    """Cycles through a recording's entries of some sources, restarting at its end if asked."""

    def __init__(self, path: Path, sources: tuple[str, ...], loop: bool) -> None:
        self._path, self._sources, self._loop = path, sources, loop
        self._it = self._entries()
        self.laps = 0
        self.broken = False  # a bad line ends the recording: report it, do not re-read it

    def _entries(self) -> Iterator[dict[str, Any]]:
        return (e for e in read_entries(self._path) if e["source"] in self._sources)

    def next(self) -> dict[str, Any] | None:
        if self.broken:
            raise RecordingError(f"{self._path}: stopped at a bad line")
        e = next(self._it, None)
        if e is None and self._loop:
            self.laps += 1
            self._it = self._entries()
            e = next(self._it, None)
        return e


class _ReplaySource:
    """Each poll returns the recording's next entry of some sources, stamped with the live clock.

    A recording that ends, or stops at a bad line, is reported as a failed poll, never raised.
    """

    def __init__(self, path: Path, sources: tuple[str, ...], clock: Callable[[], float],
                 loop: bool) -> None:  # fmt: skip
        self._entries = _Looping(path, sources, loop)
        self._clock = clock

    def _next(self, convert: Callable[[dict[str, Any], float], T]) -> T | PollError:
        try:
            e = self._entries.next()
            now = self._clock()
            if e is None:
                return PollError(now, "recording_ended", "the recording has no more entries")
            return convert(e, now)
        except RecordingError as err:
            self._entries.broken = True
            return PollError(self._clock(), "bad_recording", str(err))


class ReplayVllmSource(_ReplaySource):
    """``serve --vllm-replay``: the recording's vLLM entries, one per poll."""

    def __init__(self, path: Path, clock: Callable[[], float], loop: bool = False) -> None:
        super().__init__(path, ("vllm",), clock, loop)

    def poll(self, want_models: bool = False) -> VllmPoll:
        return VllmPoll(self._next(vllm_result))

    def close(self) -> None:
        pass


class ReplayGpuSource(_ReplaySource):
    """``serve --gpu-replay``: the recording's GPU entries, one per poll."""

    def __init__(self, path: Path, clock: Callable[[], float], loop: bool = False) -> None:
        super().__init__(path, GPU_SOURCES, clock, loop)

    def poll(self, edge: bool) -> GpuSample | PollError:
        return self._next(gpu_sample_from_entry)

    def close(self) -> None:
        pass
