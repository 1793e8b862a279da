"""The engine: ticks in, windows and an immutable snapshot out. No I/O and no clock.

Both the live loop and replay drive the same :class:`Pipeline`; only where ticks come from and
how time passes differs. Consecutive windows share their boundary poll: with 8 ticks a window,
a window holds 9 polls.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from exporter.derive.assess import Assessment, assess
from exporter.derive.diagnosis import Diagnosis, diagnose
from exporter.derive.direction import Direction, Summary, compare, summarize
from exporter.derive.gate import Gate, classify
from exporter.derive.horizon import Aggregate, aggregate
from exporter.derive.identity import TargetIdentity
from exporter.derive.resolve import RooflineSettings
from exporter.derive.rules import RuleKey, RuleResult, evaluate_window
from exporter.derive.window import Window, build_window
from exporter.samples import GpuSample, ModelsInfo, PollError, Tick, VllmSample

SOURCES_VLLM = "vllm"
SEVERAL = (
    "the vLLM URL reaches more than one vLLM process (counters and start times alternate, as "
    "behind a load-balanced Service); point --vllm-url at one pod"
)


@dataclass(frozen=True, slots=True)
class SourceHealth:
    up: bool
    last_success: float | None
    last_duration: float | None
    errors: Mapping[str, int]
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything ``/metrics`` shows, frozen at one instant."""

    health: Mapping[str, SourceHealth] = field(default_factory=dict)
    agg: Aggregate = field(default_factory=Aggregate)
    latest: Window | None = None
    latest_gate: Gate | None = None
    max_model_len: int | None = None
    ticks: int = 0
    assessment: Assessment | None = None
    diagnosis: Diagnosis | None = None
    epoch: int = 0
    direction: Direction | None = None


@dataclass(frozen=True, slots=True)
class HorizonWindow:
    window: Window
    gate: Gate
    rules: Mapping[RuleKey, RuleResult]  # empty for non-evaluable windows
    epoch: int


@dataclass(slots=True)
class _Health:
    polled: bool = False
    up: bool = False
    last_success: float | None = None
    last_duration: float | None = None
    errors: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None

    def freeze(self) -> SourceHealth:
        return SourceHealth(
            self.up,
            self.last_success,
            self.last_duration,
            MappingProxyType(dict(self.errors)),
            self.last_error,
        )


class Pipeline:
    """Groups ticks into windows, keeps the horizon, evaluates the rules, tracks configuration
    epochs, and publishes a fresh snapshot per tick."""

    def __init__(
        self,
        *,
        horizon_seconds: float,
        poll_interval: float,
        ticks_per_window: int = 8,
        gpu_source_name: str | None = "nvml",
        roofline: RooflineSettings | None = None,
        max_num_seqs: float | None = None,
    ) -> None:
        if ticks_per_window < 1:
            raise ValueError("ticks_per_window must be ≥ 1")
        self.horizon_seconds = horizon_seconds
        self.poll_interval = poll_interval
        self.ticks_per_window = ticks_per_window
        self.gpu_source_name = gpu_source_name
        # A full horizon: horizon / window length, e.g. 60 s / 2 s = 30 windows.
        self.full_windows = max(1, round(horizon_seconds / (ticks_per_window * poll_interval)))
        self._health: dict[str, _Health] = {SOURCES_VLLM: _Health()}
        if gpu_source_name:
            self._health[gpu_source_name] = _Health()
        self._buf: list[tuple[float, Tick]] = []  # (tick time, tick) of the open window
        self._ticks = 0
        self._horizon: deque[HorizonWindow] = deque()
        self._agg = Aggregate()
        self._roofline = roofline or RooflineSettings()
        self._max_num_seqs = max_num_seqs
        self._assessment: Assessment | None = None
        self._diagnosis: Diagnosis | None = None
        self._max_model_len: int | None = None
        self._identity = TargetIdentity(hold=max(60.0, horizon_seconds))
        self._last_cache_config: Mapping[str, str] | None = None
        self._epoch = 0
        self._epoch_full: Summary | None = None  # the current epoch's last full horizon
        self._baseline: Summary | None = None  # the previous epoch's last full horizon
        self._direction: Direction | None = None
        self._pending: tuple[RooflineSettings, float | None] | None = None
        self.models_wanted = True  # read /v1/models at start and after a restart
        self.snapshot = Snapshot()

    @property
    def next_is_edge(self) -> bool:
        """Whether the next tick is a window boundary (where slow GPU reads belong)."""
        return not self._buf or len(self._buf) == self.ticks_per_window

    @property
    def windows(self) -> list[tuple[Window, Gate]]:
        return [(h.window, h.gate) for h in self._horizon]

    @property
    def horizon(self) -> list[HorizonWindow]:
        return list(self._horizon)

    def _record(self, name: str, result: object, duration: float | None) -> None:
        h = self._health.setdefault(name, _Health())
        if result is None:
            return
        h.polled = True
        h.last_duration = duration
        if isinstance(result, PollError):
            h.up = False
            h.errors[result.reason] = h.errors.get(result.reason, 0) + 1
            h.last_error = result.detail or result.reason
        else:
            assert isinstance(result, (VllmSample, GpuSample))
            h.up = True
            h.last_success = result.observed_at

    def _new_epoch(self) -> None:
        """A configuration change: the previous epoch's last full horizon becomes the baseline."""
        self._epoch += 1
        self._baseline = self._epoch_full
        self._epoch_full = None
        self._direction = None

    def _note_changes(self, s: VllmSample, restarted: bool) -> None:
        reconfigured = (
            bool(s.cache_config)
            and self._last_cache_config is not None
            and dict(s.cache_config) != dict(self._last_cache_config)
        )
        if restarted:
            self.models_wanted = True
        if restarted or reconfigured:
            self._new_epoch()
        if s.cache_config:
            self._last_cache_config = s.cache_config

    def reconfigure(self, roofline: RooflineSettings, max_num_seqs: float | None) -> None:
        """The exporter's own configuration changed (a reload): a new epoch from the next tick.

        Safe to call from another thread: the change is handed over and applied by the thread
        that adds ticks.
        """
        self._pending = (roofline, max_num_seqs)

    def _apply_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._roofline, self._max_num_seqs = pending
            self._new_epoch()

    def set_models(self, info: ModelsInfo | None) -> None:
        self.models_wanted = False
        if info is not None and info.max_model_len is not None:
            self._max_model_len = info.max_model_len

    def add_tick(self, tick: Tick) -> None:
        self._apply_pending()
        self._ticks += 1
        if tick.models is not None:
            self.set_models(tick.models)
        restarted = False
        if isinstance(tick.vllm, VllmSample):
            v = tick.vllm
            verdict = self._identity.observe(v.observed_at, v.process_start_time,
                                             v.generation_tokens)  # fmt: skip
            if verdict == "several":
                # Figures mixing processes would be wrong: refuse the poll, say why.
                tick = replace(tick, vllm=PollError(v.observed_at, "several_servers", SEVERAL))
            restarted = verdict == "restart"
        self._record(SOURCES_VLLM, tick.vllm, tick.vllm_duration)
        if self.gpu_source_name:
            self._record(self.gpu_source_name, tick.gpu, tick.gpu_duration)
        if isinstance(tick.vllm, VllmSample):
            self._note_changes(tick.vllm, restarted)
        if restarted:
            # The open window's polls belong to the process that is gone: a window never
            # spans two processes (their counters and histograms do not subtract).
            self._buf = []
        times = [r.observed_at for r in (tick.vllm, tick.gpu) if r is not None]
        if times:
            self._buf.append((max(times), tick))
            if len(self._buf) > self.ticks_per_window:
                self._close_window()
        self._publish()

    def _close_window(self) -> None:
        vllm = [t.vllm for _, t in self._buf if isinstance(t.vllm, VllmSample)]
        gpu = [t.gpu for _, t in self._buf if isinstance(t.gpu, GpuSample)]
        window = replace(
            build_window(vllm, gpu, start=self._buf[0][0], end=self._buf[-1][0]),
            vllm_answered=any(isinstance(t.vllm, VllmSample) for _, t in self._buf[1:]),
            gpu_answered=any(isinstance(t.gpu, GpuSample) for _, t in self._buf[1:]),
        )
        gate = classify(window)
        rules = evaluate_window(window, self._max_num_seqs) if gate.evaluable else {}
        self._horizon.append(HorizonWindow(window, gate, MappingProxyType(rules), self._epoch))
        newest_end = window.end
        slack = self.poll_interval / 2
        # Old windows leave the horizon; so do windows "from the future" after the wall clock
        # stepped back, which would otherwise never age out.
        while self._horizon and (
            newest_end - self._horizon[0].window.start > self.horizon_seconds + slack
            or self._horizon[0].window.start > newest_end
        ):
            self._horizon.popleft()
        self._buf = self._buf[-1:]  # the boundary poll opens the next window
        self._agg = aggregate([(h.window, h.gate) for h in self._horizon])
        self._assessment = assess(self._agg, self._roofline)
        self._diagnosis = diagnose(
            [h.rules for h in self._horizon if h.gate.evaluable],
            self._agg,
            self._assessment,
            self._max_num_seqs,
        )
        self._track_direction()

    def _track_direction(self) -> None:
        same_epoch = all(h.epoch == self._epoch for h in self._horizon)
        evaluable = sum(h.gate.evaluable for h in self._horizon)
        if not same_epoch or evaluable < self.full_windows:
            return
        self._epoch_full = summarize(self._agg, self._assessment)
        if self._baseline is not None and self._direction is None:
            self._direction = compare(self._baseline, self._epoch_full)

    def _publish(self) -> None:
        latest = self._horizon[-1] if self._horizon else None
        self.snapshot = Snapshot(
            health=MappingProxyType({k: h.freeze() for k, h in self._health.items() if h.polled}),
            agg=self._agg,
            latest=latest.window if latest else None,
            latest_gate=latest.gate if latest else None,
            max_model_len=self._max_model_len,
            ticks=self._ticks,
            assessment=self._assessment,
            diagnosis=self._diagnosis,
            epoch=self._epoch,
            direction=self._direction,
        )
