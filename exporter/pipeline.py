"""The engine: ticks in, windows and an immutable snapshot out. No I/O and no clock.

Both the live loop and replay drive the same :class:`Pipeline`; only where ticks come from and
how time passes differs. Each tick, the loop (or replay) asks :meth:`Pipeline.plan` which sources
are due, then feeds back what they answered with :meth:`Pipeline.add_tick`.

A window is a span of time (docs/sources.md): it closes at the first tick at least
:data:`~exporter.derive.thresholds.WINDOW_SECONDS` after its first tick (less half a fast
interval, so that timestamps a few ms early do not add a poll: at 250 ms a window holds 9 polls),
and consecutive windows share that boundary tick. A gap longer than two windows, or the clock
stepping back, ends the open window at the tick before it: nothing is averaged across a span
that was not observed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from exporter.derive import thresholds as T
from exporter.derive.assess import Assessment, assess
from exporter.derive.cadence import EngineCadence, RefreshCadence
from exporter.derive.diagnosis import Diagnosis, diagnose
from exporter.derive.direction import Direction, Summary, compare, summarize
from exporter.derive.gate import Gate, classify
from exporter.derive.horizon import Aggregate, aggregate
from exporter.derive.identity import TargetIdentity
from exporter.derive.ledger import Ledger, accrue
from exporter.derive.resolve import RooflineSettings
from exporter.derive.rules import RuleKey, RuleResult, evaluate_window
from exporter.derive.serving_config import config_id
from exporter.derive.slo import SloSummary, window_counts
from exporter.derive.slo import summarize as summarize_slo
from exporter.derive.source_health import HealthTracker, SourceHealth
from exporter.derive.window import Window, build_window
from exporter.samples import EngineSample, GpuSample, ModelsInfo, PollError, ServingConfig, Tick

MAX_TICKS_PER_WINDOW = 4096  # timestamps that do not advance must not grow a window forever
SEVERAL = (
    "the vLLM URL reaches more than one vLLM process (counters and start times alternate, as "
    "behind a load-balanced Service); point --vllm-url at one pod"
)


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
    ledger: Ledger = field(default_factory=Ledger)
    # What started the current epoch: "vllm_restart" (into another configuration, or before it
    # is known), "vllm_restart_same_config" (a restart into the configuration it had),
    # "cache_config_change", "reconfigured"
    epoch_cause: str | None = None
    slo: SloSummary | None = None  # the latency objectives over the horizon, when set
    config_id: str = ""  # the serving configuration's identity (derive/serving_config.py)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one tick should poll: asked of the pipeline by the loop (or replay) before it polls.

    ``engine``/``gpu``: whether each source is due at this tick's cadence; ``edge``: the tick is
    expected to close a window (slow GPU reads belong there); ``engine_complete``: decode the
    whole vLLM body, for a poll that may be its window's first or last vLLM poll (the others
    need only the per-poll figures); ``models``: read ``/v1/models`` too (at start and after a
    restart); the intervals are the cadence in force."""

    engine: bool
    gpu: bool
    edge: bool
    models: bool
    engine_interval: float
    gpu_interval: float
    engine_complete: bool = True


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """What the loop learns from a tick it fed: ``refused`` says why the engine's answer was not
    taken (several processes behind one URL), None when it was (or there was none)."""

    refused: str | None = None


@dataclass(frozen=True, slots=True)
class HorizonWindow:
    window: Window
    gate: Gate
    rules: Mapping[RuleKey, RuleResult]  # empty for non-evaluable windows
    epoch: int


def _gpu_busy(g: GpuSample) -> bool:
    """A GPU works: load may have begun on an idle vLLM."""
    return any(
        r.util_gpu_pct is not None and r.util_gpu_pct >= T.CADENCE_WAKE_GPU_UTIL_PCT for r in g.gpus
    )


class Pipeline:
    """Groups ticks into windows, keeps the horizon, evaluates the rules, tracks configuration
    epochs, and publishes a fresh snapshot per tick."""

    def __init__(
        self,
        *,
        horizon_seconds: float,
        poll_interval: float,
        calm_poll_interval: float | None = None,
        idle_poll_interval: float | None = None,
        engine_source_name: str = "vllm",
        gpu_source_name: str | None = "nvml",
        gpu_cadence: RefreshCadence | None = None,
        roofline: RooflineSettings | None = None,
        max_num_seqs: float | None = None,
        window_seconds: float = T.WINDOW_SECONDS,
        whole_epochs: bool = False,
        revision: str = "",
    ) -> None:
        """``whole_epochs`` (replay of a whole recording): the horizon is the current epoch,
        from its first window, and the direction compares it with the whole previous epoch.
        ``revision``: the deployment's own name for its configuration (part of its identity)."""
        if poll_interval <= 0 or window_seconds <= 0:
            raise ValueError("the poll interval and the window must be positive")
        self.horizon_seconds = horizon_seconds
        self.poll_interval = poll_interval
        self.window_seconds = window_seconds
        self.whole_epochs = whole_epochs
        self.engine_source_name = engine_source_name
        self.gpu_source_name = gpu_source_name
        # Half a fast interval: a tick a few ms early still closes its window.
        self._slack = poll_interval / 2
        calm = poll_interval if calm_poll_interval is None else calm_poll_interval
        self.cadence = EngineCadence(fast=poll_interval, calm=calm, idle=idle_poll_interval,
                                   max_num_seqs=max_num_seqs)  # fmt: skip
        self.gpu_cadence = gpu_cadence
        # A full horizon: horizon / window length, e.g. 60 s / 2 s = 30 windows.
        self.full_windows = max(1, round(horizon_seconds / window_seconds))
        self._health: dict[str, HealthTracker] = {engine_source_name: HealthTracker()}
        if gpu_source_name:
            self._health[gpu_source_name] = HealthTracker()
        self._buf: list[tuple[float, Tick]] = []  # (tick time, tick) of the open window
        self._engine_duration = 0.0  # how long the latest vLLM poll took
        self._ticks = 0
        self._horizon: deque[HorizonWindow] = deque()
        self._agg = Aggregate()
        self._roofline = roofline or RooflineSettings()
        self._max_num_seqs = max_num_seqs
        self._assessment: Assessment | None = None
        self._diagnosis: Diagnosis | None = None
        self._max_model_len: int | None = None
        self._model_roots: Mapping[str, str] = {}
        self._identity = TargetIdentity(hold=max(60.0, horizon_seconds))
        self._last_serving: ServingConfig | None = None
        self._epoch = 0
        self._epoch_full: Summary | None = None  # the current epoch's last full horizon
        self._baseline: Summary | None = None  # the previous epoch's last full horizon
        self._direction: Direction | None = None
        self._ledger = Ledger()
        self._epoch_cause: str | None = None
        self._slo: SloSummary | None = None
        self._pending: tuple[RooflineSettings, float | None] | None = None
        self.revision = revision
        # What the process looked like before a restart: (visible cache config, models, engines)
        self._last_seen: tuple[dict[str, str], tuple[str, ...], int] | None = None
        self._restart_from: tuple[dict[str, str], tuple[str, ...], int] | None = None
        self._config_id: tuple[object, str] = (None, "")  # (the aggregate it was worked from, id)
        self.models_wanted = True  # read /v1/models at start and after a restart
        self.snapshot = Snapshot()

    def _span(self) -> float:
        """The open window's length: the window, or the vLLM interval in force if longer (an
        idle cadence), so that a window holds two vLLM polls and every second it spans is
        observed."""
        return max(self.window_seconds, self.cadence.interval)

    @property
    def gap_seconds(self) -> float:
        """Ticks come at least every vLLM interval while vLLM answers: a longer gap than two
        windows (or two intervals) is one."""
        return T.GAP_WINDOWS * max(self._span(), self.cadence.calm)

    def _closes(self, at: float) -> bool:
        return at - self._buf[0][0] >= self._span() - self._slack

    def plan(self, at: float) -> Plan:
        """What a tick starting at ``at`` (wall clock) should poll."""
        gpu = self.gpu_cadence
        edge = not self._buf or self._closes(at) or self._breaks(at)
        return Plan(
            engine=self.cadence.due(at),
            gpu=gpu is None or gpu.due(at, self._slack),
            edge=edge,
            models=self.models_wanted,
            engine_interval=self.cadence.interval,
            gpu_interval=self.poll_interval if gpu is None else gpu.interval,
            # The window's first vLLM poll, or one that may be its last: the next answer
            # comes at least an interval (or a poll's duration, if longer) later; twice that,
            # for a poll that fails or comes late.
            engine_complete=edge
            or self._last_engine_sample() is None
            or self._closes(at + 2 * max(self.cadence.interval, self._engine_duration)),
        )

    def _last_engine_sample(self) -> EngineSample | None:
        """The open window's latest engine sample."""
        found = (t.engine for _, t in reversed(self._buf) if isinstance(t.engine, EngineSample))
        return next(found, None)

    @property
    def windows(self) -> list[tuple[Window, Gate]]:
        return [(h.window, h.gate) for h in self._horizon]

    @property
    def horizon(self) -> list[HorizonWindow]:
        return list(self._horizon)

    def _record(
        self, name: str, result: EngineSample | GpuSample | PollError | None, d: float | None
    ) -> None:
        self._health[name].record(result, d)  # every source the pipeline was built with

    def _new_epoch(self, cause: str) -> None:
        """A configuration change: the previous epoch's last full horizon becomes the baseline."""
        self._epoch += 1
        self._epoch_cause = cause
        if self.whole_epochs:
            # The previous epoch, whole, is the baseline; the horizon starts again with this one.
            if any(h.gate.evaluable for h in self._horizon):
                self._baseline = summarize(self._agg, self._assessment)
            self._horizon.clear()
            self._direction = None
            return
        self._baseline = self._epoch_full
        self._epoch_full = None
        self._direction = None

    def _note_changes(self, s: EngineSample, restarted: bool) -> None:
        reconfigured = (
            s.serving.stated and self._last_serving is not None and s.serving != self._last_serving
        )
        if restarted:
            self.models_wanted = True
            self.cadence.reset()
            self._restart_from = self._last_seen
        if restarted or reconfigured:
            self._new_epoch("vllm_restart" if restarted else "cache_config_change")
        if s.serving.stated:
            self._last_serving = s.serving
            seen = (dict(s.serving.settings), s.model_names, s.engines)
            if self._restart_from is not None:
                # The first whole read after a restart says whether it kept its configuration:
                # a crash restart is a restart, not a configuration change.
                if seen == self._restart_from:
                    self._epoch_cause = "vllm_restart_same_config"
                self._restart_from = None
            self._last_seen = seen

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
            self._config_id = (None, "")
            self.cadence.max_num_seqs = self._max_num_seqs
            self._new_epoch("reconfigured")

    def set_models(self, info: ModelsInfo | None) -> None:
        self.models_wanted = False
        if info is not None and info.max_model_len is not None:
            self._max_model_len = info.max_model_len
        if info is not None:
            self._model_roots = MappingProxyType(dict(info.roots))

    def add_tick(self, tick: Tick) -> TickOutcome:
        self._apply_pending()
        self._ticks += 1
        if tick.models is not None:
            self.set_models(tick.models)
        elif isinstance(tick.engine, EngineSample):
            # vLLM answered /metrics but not /v1/models: ask again only after a restart.
            self.models_wanted = False
        restarted = False
        refused = None
        if isinstance(tick.engine, EngineSample):
            v = tick.engine
            verdict = self._identity.observe(v.observed_at, v.process_start_time,
                                             v.generation_tokens)  # fmt: skip
            if verdict == "several":
                # Figures mixing processes would be wrong: refuse the poll, say why.
                tick = replace(tick, engine=PollError(v.observed_at, "several_servers", SEVERAL))
                refused = SEVERAL
            restarted = verdict == "restart"
        self._record(self.engine_source_name, tick.engine, tick.engine_duration)
        if tick.engine_duration is not None:
            self._engine_duration = tick.engine_duration
        if self.gpu_source_name:
            self._record(self.gpu_source_name, tick.gpu, tick.gpu_duration)
        if isinstance(tick.engine, EngineSample):
            self._note_changes(tick.engine, restarted)
            self.cadence.observe(tick.engine)
        elif tick.engine is not None:
            self.cadence.polled(tick.engine.observed_at)
        if self.gpu_cadence is not None:
            if isinstance(tick.gpu, GpuSample):
                self.gpu_cadence.observe(tick.gpu, tick.gpu.gpus)
            elif tick.gpu is not None:
                self.gpu_cadence.polled(tick.gpu.observed_at)
        if restarted:
            # The open window's polls belong to the process that is gone: a window never
            # spans two processes (their counters and histograms do not subtract).
            self._buf = []
        times = [r.observed_at for r in (tick.engine, tick.gpu) if r is not None]
        if times:
            self._add(max(times), tick)
        if isinstance(tick.gpu, GpuSample) and _gpu_busy(tick.gpu):
            # After the window decision at this tick: the window that ends next holds the
            # vLLM poll this wake asks for.
            self.cadence.wake(tick.gpu.observed_at)
        self._publish()
        return TickOutcome(refused)

    def offer(self, tick: Tick) -> TickOutcome:
        """Replay: a recorded tick, as the live loop would have polled it. A source that the
        plan says is not due at the tick's time is dropped from it, so a recording made at the
        fast interval replays the cadence's decisions."""
        times = [r.observed_at for r in (tick.engine, tick.gpu) if r is not None]
        if times:
            plan = self.plan(min(times))
            if not plan.engine and tick.engine is not None:
                tick = replace(
                    tick, engine=None, models=None
                )  # a duration without a poll is unused
            if not plan.gpu and tick.gpu is not None:
                tick = replace(tick, gpu=None)
        return self.add_tick(tick)

    def _breaks(self, at: float) -> bool:
        """A gap, or the clock stepped back, between the open window's last tick and ``at``."""
        last = self._buf[-1][0]
        return at < last or at - last > self.gap_seconds

    def _add(self, at: float, tick: Tick) -> None:
        if self._buf and self._breaks(at):
            # A gap, or the clock stepped back: the open window ends at the tick before.
            if len(self._buf) > 1:
                self._close_window()
            self._buf = []
            if at < self._horizon_end():
                self._evict(at)
                self._refresh()
        if isinstance(tick.engine, EngineSample) and not tick.engine.complete:
            if self._last_engine_sample() is None:
                # A window's counters and histograms start at its first vLLM sample, which
                # must be whole: a partly read one (after a restart or a gap the plan did not
                # foresee) stays out; the plan makes the next poll whole.
                tick = replace(tick, engine=None)
                if tick.gpu is None:
                    return
        if tick.engine_body is not None or tick.models_body is not None:
            # The raw texts are the recorder's (it wrote them from the tick): the open window
            # keeps the decoded samples only, never up to a window of 8 MiB bodies.
            tick = replace(tick, engine_body=None, models_body=None)
        self._buf.append((at, tick))
        if len(self._buf) > 1 and (
            (self._closes(at) and self._may_end(at, tick)) or len(self._buf) >= MAX_TICKS_PER_WINDOW
        ):
            self._close_window()

    def _may_end(self, at: float, tick: Tick) -> bool:
        """A window ends where its counters and histograms can end: not at a partly read vLLM
        sample (the plan did not foresee this tick would close the window; its next poll is
        whole), for a window more at most. A window whose vLLM stopped answering, or answers
        later than planned, ends on time: what its last partly read sample lacks (counter and
        histogram deltas) is absent for that window, never estimated."""
        v = tick.engine
        if v is None and self._last_engine_sample() is not None:
            # vLLM not polled at this tick: the window ends at its next vLLM poll, so that every
            # second it spans lies between two of them (an idle cadence polls seconds apart).
            return at - self._buf[0][0] >= 2 * self._span()
        if not isinstance(v, EngineSample) or v.complete:
            return True
        return at - self._buf[0][0] >= 2 * self.window_seconds

    def _horizon_end(self) -> float:
        return self._horizon[-1].window.end if self._horizon else float("-inf")

    def _evict(self, newest_end: float) -> None:
        # Old windows leave the horizon; so do windows "from the future" after the wall clock
        # stepped back, which would otherwise never age out.
        slack = self._slack
        while self._horizon and (
            newest_end - self._horizon[0].window.start > self.horizon_seconds + slack
            or self._horizon[0].window.start > newest_end
        ):
            self._horizon.popleft()

    def _close_window(self) -> None:
        vllm = [t.engine for _, t in self._buf if isinstance(t.engine, EngineSample)]
        gpu = [t.gpu for _, t in self._buf if isinstance(t.gpu, GpuSample)]
        window = replace(
            build_window(vllm, gpu, start=self._buf[0][0], end=self._buf[-1][0]),
            engine_answered=any(isinstance(t.engine, EngineSample) for _, t in self._buf[1:]),
            gpu_answered=any(isinstance(t.gpu, GpuSample) for _, t in self._buf[1:]),
        )
        gate = classify(window)
        rules = evaluate_window(window, self._max_num_seqs) if gate.evaluable else {}
        self._horizon.append(HorizonWindow(window, gate, MappingProxyType(rules), self._epoch))
        self._evict(window.end)
        self._buf = self._buf[-1:]  # the boundary poll opens the next window
        self._refresh()
        # The price in force when the window closed (it needs the GPU's name: an assessment).
        a = self._assessment
        self._ledger = accrue(
            self._ledger,
            window,
            evaluable=gate.evaluable,
            active=gate.active,
            cost_per_hour=a.economics.cost_per_hour if a else None,
            price_source=a.price_source if a else None,
            slo=window_counts(window, self._roofline.slo) if gate.evaluable else None,
        )

    def _refresh(self) -> None:
        # A GPU source polled every N seconds leaves windows without GPU data in between: its
        # figures stay fresh for one of its intervals and a window more, not longer.
        hold = 0.0 if self.gpu_cadence is None else self.gpu_cadence.interval + self.window_seconds
        self._agg = aggregate([(h.window, h.gate) for h in self._horizon], gpu_hold=hold)
        self._assessment = assess(self._agg, self._roofline, self._model_roots)
        self._diagnosis = diagnose(
            [h.rules for h in self._horizon if h.gate.evaluable],
            self._agg,
            self._assessment,
            self._max_num_seqs,
        )
        self._slo = summarize_slo(
            [h.window for h in self._horizon if h.gate.evaluable],
            self._roofline.slo,
            self._agg.generation_tps,
        )
        self._track_direction()

    def _track_direction(self) -> None:
        same_epoch = all(h.epoch == self._epoch for h in self._horizon)
        evaluable = sum(h.gate.evaluable for h in self._horizon)
        if self.whole_epochs:
            if self._baseline is not None and evaluable >= T.PERSIST_MIN_WINDOWS:
                self._direction = compare(self._baseline, summarize(self._agg, self._assessment))
            return
        if not same_epoch or evaluable < self.full_windows:
            return
        self._epoch_full = summarize(self._agg, self._assessment)
        if self._baseline is not None and self._direction is None:
            self._direction = compare(self._baseline, self._epoch_full)

    def _interval(self, source: str) -> float:
        if source == self.engine_source_name:
            return self.cadence.interval
        return self.poll_interval if self.gpu_cadence is None else self.gpu_cadence.interval

    def declared(self) -> dict[str, str]:
        """The settings given to the exporter that shape what it judges: part of the identity."""
        r = self._roofline
        out = {"max_num_seqs": f"{self._max_num_seqs:g}" if self._max_num_seqs else "",
               "tp": str(r.tp or ""), "pp": str(r.pp), "dtype": r.dtype_flag or r.dtype_env or "",
               "model_params": ",".join(f"{p:g}" for p in r.model_params or () if p is not None),
               "revision": self.revision}  # fmt: skip
        return {k: v for k, v in out.items() if v}

    def _identity_now(self) -> str:
        agg = self._agg
        if not agg.model_names:
            return ""  # no vLLM data yet: nothing to name
        if self._config_id[0] is not agg:
            ident = config_id(agg.model_names, agg.serving.settings, agg.engines, self.declared())
            self._config_id = (agg, ident)
        return self._config_id[1]

    def _publish(self) -> None:
        latest = self._horizon[-1] if self._horizon else None
        self.snapshot = Snapshot(
            health=MappingProxyType(
                {k: h.freeze(self._interval(k)) for k, h in self._health.items() if h.polled}
            ),
            agg=self._agg,
            latest=latest.window if latest else None,
            latest_gate=latest.gate if latest else None,
            max_model_len=self._max_model_len,
            ticks=self._ticks,
            assessment=self._assessment,
            diagnosis=self._diagnosis,
            epoch=self._epoch,
            direction=self._direction,
            ledger=self._ledger,
            epoch_cause=self._epoch_cause,
            slo=self._slo,
            config_id=self._identity_now(),
        )
