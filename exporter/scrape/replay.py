"""Sources that read recordings instead of live endpoints (docs/design.md#recordings).

``replay_ticks`` drives the pipeline in simulated time (the recorded timestamps); the two
``Replay*Source`` classes feed ``serve`` in real time, restamping each entry with the live clock.
Recordings are streamed, never loaded whole: a ten-hour recording holds gigabytes of bodies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from exporter.engines import ENGINES, MODELS_SUFFIX, recorded_engine
from exporter.recording import (
    GPU_SOURCES,
    Damage,
    RecordingError,
    gpu_sample_from_entry,
    read_entries,
)
from exporter.samples import EngineSample, GpuSample, ModelsInfo, PollError, Tick
from exporter.scrape.source import Engine, EnginePoll
from exporter.scrape.text_format import ParseError

T = TypeVar("T")


def engine_result(
    entry: dict[str, Any], observed_at: float, complete: bool = True
) -> EngineSample | PollError:
    """An engine entry of a recording, read by its own engine's parsers (the entry's source)."""
    engine = ENGINES[entry["source"]]
    if "error" in entry:
        return PollError(observed_at, str(entry["error"]), "recorded error")
    if "body" not in entry:
        raise RecordingError(
            f"line {entry.get('_line', '?')}: a {engine.kind} entry needs 'body' or 'error'"
        )
    try:
        parse = engine.parse_metrics if complete else engine.parse_poll
        return parse(entry["body"], observed_at)
    except ParseError as e:
        return PollError(observed_at, e.reason, e.detail)


def recording_engine(path: Path) -> Engine | None:
    """The engine whose polls a recording holds (its first engine entry says); None for a
    recording of GPUs alone."""
    for e in read_entries(path):
        found = recorded_engine(e["source"])
        if found is not None:
            return found
    return None


def _engine_stream(
    path: Path, damage: Damage
) -> Iterator[tuple[dict[str, Any], ModelsInfo | None]]:
    models: ModelsInfo | None = None
    for e in read_entries(path, damage):
        engine = recorded_engine(e["source"])
        if engine is None:
            continue
        if e["source"] == engine.kind:
            yield e, models
            models = None
        elif e["source"] == engine.kind + MODELS_SUFFIX:
            models = engine.parse_models(e.get("body", ""), float(e["t"])) or models


def _gpu_stream(path: Path, damage: Damage) -> Iterator[dict[str, Any]]:
    return (e for e in read_entries(path, damage) if e["source"] in GPU_SOURCES)


def _has_source(path: Path, sources: tuple[str, ...]) -> bool:
    return any(e["source"] in sources for e in read_entries(path))


PAIR_WITHIN = 0.125  # two entries this close in time were one tick's polls (half of 250 ms)


def replay_ticks(
    vllm_path: Path | None, gpu_path: Path | None = None, damage: list[Damage] | None = None
) -> Iterator[Tick]:
    """Ticks from recordings, in recorded time.

    Entries are merged by time: a vLLM and a GPU entry within :data:`PAIR_WITHIN` of each other
    make one tick, any other entry a tick of its own (a recording made at the calm cadence holds
    a vLLM entry every fourth GPU entry). The vLLM stream sets the end; a GPU stream from another
    file is shifted so its first entry lines up with the first vLLM entry, and once it ends, the
    remaining ticks report ``recording_ended``. With only a GPU recording, it sets the pace. A
    recording with a damaged tail is used up to it; ``damage`` collects what was dropped.
    """
    vd, gd = Damage(), Damage()
    if damage is not None:
        damage += [vd, gd]
    if vllm_path is None and gpu_path is None:
        raise ValueError("nothing to replay")
    if gpu_path is None and vllm_path is not None and _has_source(vllm_path, GPU_SOURCES):
        gpu_path = vllm_path
    vllm_it = _engine_stream(vllm_path, vd) if vllm_path is not None else None
    gpu_it = _gpu_stream(gpu_path, gd) if gpu_path is not None else None
    offset: float | None = 0.0 if gpu_path == vllm_path else None
    v = next(vllm_it, None) if vllm_it is not None else None
    g = next(gpu_it, None) if gpu_it is not None else None
    while True:
        if vllm_it is not None and v is None:
            return
        if vllm_it is None and g is None:
            return
        tv = float(v[0]["t"]) if v is not None else None
        if g is not None and offset is None:
            offset = (tv - float(g["t"])) if tv is not None else 0.0
        tg = float(g["t"]) + (offset or 0.0) if g is not None else None
        take_v = v is not None and (tg is None or tv <= tg + PAIR_WITHIN)  # type: ignore[operator]
        take_g = g is not None and (tv is None or tg <= tv + PAIR_WITHIN)  # type: ignore[operator]
        vllm: EngineSample | PollError | None = None
        models = None
        if take_v:
            assert v is not None and tv is not None
            entry, models = v
            vllm = engine_result(entry, tv)
            v = next(vllm_it, None) if vllm_it is not None else None
        gpu: GpuSample | PollError | None = None
        if take_g:
            assert g is not None and tg is not None
            gpu = gpu_sample_from_entry(g, tg)
            g = next(gpu_it, None) if gpu_it is not None else None
        elif gpu_it is not None and g is None and tv is not None:
            gpu = PollError(tv, "recording_ended", "the GPU recording is shorter than vLLM's")
        yield Tick(engine=vllm, gpu=gpu, models=models)


MAX_JUMP = 10.0  # a step longer than this in a recording's times is a seam, not a pause


class _Looping:
    """A recording's entries of some sources on one continuous timeline, restarting at its end
    if asked.

    The timeline follows the recorded times, except at a seam — the clock stepping back, a jump
    of more than :data:`MAX_JUMP` (recordings joined end to end), or the start of a new lap —
    where it continues one step (the recording's first poll interval) after the entry before.
    """

    def __init__(self, path: Path, sources: tuple[str, ...], loop: bool) -> None:
        self._path, self._sources, self._loop = path, sources, loop
        self._it = self._entries()
        self.laps = 0
        self.broken = False  # a bad line ends the recording: report it, do not re-read it
        self.step = 0.25  # learned from the first two entries
        self._raw: float | None = None  # the previous entry's recorded time
        self._played: float | None = None  # and its place on the timeline
        self._entries_seen = 0

    def _entries(self) -> Iterator[dict[str, Any]]:
        return (e for e in read_entries(self._path) if e["source"] in self._sources)

    def next(self) -> tuple[float, dict[str, Any]] | None:
        """The next entry and its time on the timeline; None at the end."""
        if self.broken:
            raise RecordingError(f"{self._path}: stopped at a bad line")
        e = next(self._it, None)
        if e is None and self._loop and self._entries_seen:
            self.laps += 1
            self._it = self._entries()
            e = next(self._it, None)
            self._raw = None  # the lap's first entry continues one step on
        if e is None:
            return None
        t = float(e["t"])
        self._entries_seen += 1
        if self._played is None:
            played = t
        elif self._raw is not None and 0.0 <= t - self._raw <= MAX_JUMP:
            if self._entries_seen == 2 and t > self._raw:
                self.step = t - self._raw  # the recording's own poll interval
            played = self._played + (t - self._raw)
        else:
            played = self._played + self.step  # a seam
        self._raw, self._played = t, played
        return played, e


class _ReplaySource:
    """Each poll returns the recording's entry for the time elapsed since the first poll (the
    recording plays at its recorded pace, however often it is polled), stamped with the live
    clock. A poll more frequent than the recording repeats its entry; a rarer one skips entries,
    as polling the live target less often would.

    A recording that ends, or stops at a bad line, is reported as a failed poll, never raised.
    """

    def __init__(self, path: Path, sources: tuple[str, ...], clock: Callable[[], float],
                 loop: bool) -> None:  # fmt: skip
        self._entries = _Looping(path, sources, loop)
        self._clock = clock
        self._origin: tuple[float, float] | None = None  # (live, recorded) time of the first poll
        self._current: tuple[float, dict[str, Any]] | None = None
        self._ahead: tuple[float, dict[str, Any]] | None = None
        self._ended = False

    def _peek(self) -> tuple[float, dict[str, Any]] | None:
        if self._ahead is None and not self._ended:
            self._ahead = self._entries.next()
            self._ended = self._ahead is None
        return self._ahead

    def _entry(self, now: float) -> dict[str, Any] | None:
        if self._origin is None:
            first = self._peek()
            if first is None:
                return None
            self._origin, self._current, self._ahead = (now, first[0]), first, None
            return first[1]
        target = self._origin[1] + (now - self._origin[0])
        step = self._entries.step
        # The entry nearest the target: advance while the next one is due within half a step.
        while (nxt := self._peek()) is not None and nxt[0] <= target + step / 2:
            self._current, self._ahead = nxt, None
        if self._current is None or (self._ended and target > self._current[0] + step):
            return None
        return self._current[1]

    def _next(self, convert: Callable[[dict[str, Any], float], T]) -> T | PollError:
        now = self._clock()
        try:
            e = self._entry(now)
        except RecordingError as err:
            self._entries.broken = True
            return PollError(now, "bad_recording", str(err))
        if e is None:
            return PollError(now, "recording_ended", "the recording has no more entries")
        return convert(e, now)


class ReplayEngineSource(_ReplaySource):
    """``serve --vllm-replay``: the recording's engine entries, at the recorded pace, each read
    by the engine that wrote it."""

    def __init__(self, path: Path, clock: Callable[[], float], loop: bool = False) -> None:
        super().__init__(path, tuple(ENGINES), clock, loop)

    def poll(self, want_models: bool = False, complete: bool = True) -> EnginePoll:
        return EnginePoll(self._next(lambda e, t: engine_result(e, t, complete)))

    def close(self) -> None:
        pass


class ReplayGpuSource(_ReplaySource):
    """``serve --gpu-replay``: the recording's GPU entries, at the recorded pace."""

    def __init__(self, path: Path, clock: Callable[[], float], loop: bool = False) -> None:
        super().__init__(path, GPU_SOURCES, clock, loop)

    def poll(self, edge: bool) -> GpuSample | PollError:
        return self._next(gpu_sample_from_entry)

    def close(self) -> None:
        pass
