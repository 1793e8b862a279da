"""The engine: ticks in, windows and an immutable snapshot out. No I/O and no clock.

Both the live loop and replay drive the same :class:`Pipeline`; only where ticks come from and
how time passes differs. Each tick, the loop (or replay) asks :meth:`Pipeline.plan` which sources
are due, then feeds back what they answered with :meth:`Pipeline.add_tick`, which says what the
loop needs to know (:class:`TickOutcome`).

The pipeline is a façade over parts with one concern each, all in ``derive/``: the sources'
health (``source_health``), when each source is due (``cadence``), which process answers
(``identity``), cutting ticks into windows (``windower``), the horizon's windows
(``horizon_windows``), configuration epochs and the direction (``epochs``), and the figures
worked from the horizon (``horizon``, ``assess``, ``diagnosis``, ``slo``, ``ledger``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from exporter.derive import thresholds as T
from exporter.derive.assess import Assessment, assess
from exporter.derive.cadence import EngineCadence, RefreshCadence, gpu_busy
from exporter.derive.capacity import Capacity, estimate, mix
from exporter.derive.diagnosis import Diagnosis, diagnose
from exporter.derive.direction import Direction, Summary, compare, summarize
from exporter.derive.epochs import Epochs
from exporter.derive.gate import Gate, classify
from exporter.derive.horizon import Aggregate, aggregate
from exporter.derive.horizon_windows import HorizonWindow, HorizonWindows
from exporter.derive.identity import TargetIdentity
from exporter.derive.ledger import Ledger, accrue
from exporter.derive.resolve import RooflineSettings
from exporter.derive.rules import evaluate_window
from exporter.derive.serving_config import config_id
from exporter.derive.slo import SloSummary, window_counts
from exporter.derive.slo import summarize as summarize_slo
from exporter.derive.source_health import HealthTracker, SourceHealth
from exporter.derive.step_fit import StepMemory
from exporter.derive.window import Window
from exporter.derive.windower import MAX_TICKS_PER_WINDOW, Cut, Windower
from exporter.samples import EngineSample, GpuSample, ModelsInfo, PollError, Tick

__all__ = ["MAX_TICKS_PER_WINDOW", "HorizonWindow", "Pipeline", "Plan", "Snapshot", "TickOutcome"]
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
    # What started the current epoch: "engine_restart" (into another configuration, or before it
    # is known), "engine_restart_same_config" (a restart into the configuration it had),
    # "cache_config_change", "reconfigured"
    epoch_cause: str | None = None
    slo: SloSummary | None = None  # the latency objectives over the horizon, when set
    config_id: str = ""  # the serving configuration's identity (derive/serving_config.py)
    capacity: Capacity = field(default_factory=lambda: Capacity("too_few_windows"))


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
        self.poll_interval = poll_interval
        self.window_seconds = window_seconds
        self.engine_source_name = engine_source_name
        self.gpu_source_name = gpu_source_name
        # Half a fast interval: a tick a few ms early still closes its window.
        self._slack = poll_interval / 2
        calm = poll_interval if calm_poll_interval is None else calm_poll_interval
        self.cadence = EngineCadence(fast=poll_interval, calm=calm, idle=idle_poll_interval,
                                     max_num_seqs=max_num_seqs)  # fmt: skip
        self.gpu_cadence = gpu_cadence
        self._health: dict[str, HealthTracker] = {engine_source_name: HealthTracker()}
        if gpu_source_name:
            self._health[gpu_source_name] = HealthTracker()
        self.windower = Windower(window_seconds, self._slack, self.cadence)
        self._horizon = HorizonWindows(horizon_seconds, self._slack)
        self.epochs = Epochs(whole_epochs)
        self._ticks = 0
        self._agg = Aggregate()
        self._roofline = roofline or RooflineSettings()
        self._max_num_seqs = max_num_seqs
        self._assessment: Assessment | None = None
        self._diagnosis: Diagnosis | None = None
        self._max_model_len: int | None = None
        self._model_roots: Mapping[str, str] = {}
        self._identity = TargetIdentity(hold=max(60.0, horizon_seconds))
        self._ledger = Ledger()
        self._slo: SloSummary | None = None
        self._steps = StepMemory()  # the step-time fit's memory, of this epoch
        self._capacity = Capacity("too_few_windows")
        self._pending: tuple[RooflineSettings, float | None] | None = None
        self.revision = revision
        self._config_id: tuple[object, str] = (None, "")  # (the aggregate it was worked from, id)
        self.models_wanted = True  # read /v1/models at start and after a restart
        self.snapshot = Snapshot()

    @property
    def whole_epochs(self) -> bool:
        return self.epochs.whole_epochs

    @property
    def gap_seconds(self) -> float:
        return self.windower.gap_seconds

    def plan(self, at: float) -> Plan:
        """What a tick starting at ``at`` (wall clock) should poll."""
        gpu = self.gpu_cadence
        edge = self.windower.edge(at)
        return Plan(
            engine=self.cadence.due(at),
            gpu=gpu is None or gpu.due(at, self._slack),
            edge=edge,
            models=self.models_wanted,
            engine_interval=self.cadence.interval,
            gpu_interval=self.poll_interval if gpu is None else gpu.interval,
            engine_complete=self.windower.whole_read(at, edge),
        )

    @property
    def windows(self) -> list[tuple[Window, Gate]]:
        return [(h.window, h.gate) for h in self._horizon]

    @property
    def horizon(self) -> list[HorizonWindow]:
        return list(self._horizon)

    def summary(self) -> Summary:
        """The horizon's figures, as the direction compares them."""
        return summarize(self._agg, self._assessment)

    def compared_with(self, baseline: Summary) -> Direction:
        """The direction from ``baseline`` (a summary from before: an earlier run of
        ``diagnose``) to the horizon now."""
        return compare(baseline, self.summary())

    def _new_epoch(self, cause: str) -> None:
        """A configuration change: the previous epoch's last full horizon becomes the baseline
        (with whole epochs: the previous epoch, whole, and the horizon starts again)."""
        finished = None
        if self.whole_epochs:
            if self._horizon.evaluable():
                finished = self.summary()
            self._horizon.clear()
        self.epochs.begin(cause, finished)
        self._steps.clear()

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
            # The engine answered its metrics but not its models: ask again after a restart.
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
        self._health[self.engine_source_name].record(tick.engine, tick.engine_duration)
        if tick.engine_duration is not None:
            self.windower.engine_duration = tick.engine_duration
        if self.gpu_source_name:
            self._health[self.gpu_source_name].record(tick.gpu, tick.gpu_duration)
        if isinstance(tick.engine, EngineSample):
            if restarted:
                self.models_wanted = True
                self.cadence.reset()
            cause = self.epochs.change(tick.engine, restarted)
            if cause is not None:
                self._new_epoch(cause)
            self.epochs.settle(tick.engine)
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
            self.windower.drop()
        times = [r.observed_at for r in (tick.engine, tick.gpu) if r is not None]
        if times:
            self._take(max(times), self.windower.add(max(times), tick))
        if isinstance(tick.gpu, GpuSample) and gpu_busy(tick.gpu):
            # After the window decision at this tick: the window that ends next holds the
            # engine poll this wake asks for.
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
                # a duration without a poll is unused
                tick = replace(tick, engine=None, models=None)
            if not plan.gpu and tick.gpu is not None:
                tick = replace(tick, gpu=None)
        return self.add_tick(tick)

    def _take(self, at: float, cut: Cut) -> None:
        """What the windower cut at a tick at ``at``, into the horizon."""
        if cut.before is not None:
            self._close(cut.before)
        if cut.broke and at < self._horizon.end():
            # The clock stepped back: windows "from the future" leave the horizon.
            self._horizon.evict(at)
            self._refresh()
        if cut.after is not None:
            self._close(cut.after)

    def _close(self, window: Window) -> None:
        gate = classify(window)
        rules = evaluate_window(window, self._max_num_seqs) if gate.evaluable else {}
        self._horizon.add(HorizonWindow(window, gate, MappingProxyType(rules), self.epochs.epoch))
        if gate.active:
            self._steps.add(window)
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
        evaluable = [h.window for h in self._horizon if h.gate.evaluable]
        self._slo = summarize_slo(evaluable, self._roofline.slo, self._agg.generation_tps)
        self._capacity = estimate(self._steps.fit(), mix(evaluable, self._agg), self._agg,
                                  tpot_target=self._roofline.slo.tpot,
                                  ttft_target=self._roofline.slo.ttft,
                                  max_num_seqs=self._max_num_seqs,
                                  bins=self._steps.reservoir.bins(),
                                  since_change=self.epochs.epoch > 0)  # fmt: skip
        self.epochs.track(self._horizon.full(self.epochs.epoch), self._horizon.evaluable(),
                          self.summary)  # fmt: skip

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
            return ""  # no engine data yet: nothing to name
        if self._config_id[0] is not agg:
            ident = config_id(agg.model_names, agg.serving.settings, agg.engines, self.declared())
            self._config_id = (agg, ident)
        return self._config_id[1]

    def _publish(self) -> None:
        latest = self._horizon.latest
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
            epoch=self.epochs.epoch,
            direction=self.epochs.direction,
            ledger=self._ledger,
            epoch_cause=self.epochs.cause,
            slo=self._slo,
            config_id=self._identity_now(),
            capacity=self._capacity,
        )
