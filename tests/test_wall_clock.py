"""Wall-clock economics (docs/design.md) against a computation by hand: a real busy recording
behind an idle stretch, replayed; the counters and gauges recomputed from the recording's own
polls."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.derive.ledger import Ledger, accrue, window_joules
from exporter.derive.window import GpuWindow, Window
from tests.helpers import cli_in_process
from tests.paths import UNDERBATCH
from tests.test_replay_cli import reference_value, samples

IDLE_POLLS = 64  # 16 s at 250 ms: eight whole idle windows before the busy ones


def idle_copy(body: str) -> str:
    """The same server with nothing running: no request, an empty KV cache, counters frozen."""
    body = re.sub(r"^(vllm:num_requests_running\{[^}]*\}) \S+$", r"\1 0.0", body, flags=re.M)
    return re.sub(r"^(vllm:kv_cache_usage_perc\{[^}]*\}) \S+$", r"\1 0.0", body, flags=re.M)


def idle_then_busy(tmp: Path) -> tuple[Path, list[dict[str, Any]]]:
    """16 s of idle polls (copies of the first poll, counters frozen), then the real recording."""
    with gzip.open(UNDERBATCH, "rt") as f:
        lines = [json.loads(line) for line in f]
    header = [e for e in lines if "t" not in e]
    polls = [e for e in lines if e.get("source") == "vllm"]
    t0 = polls[0]["t"]
    idle = [
        {"t": t0 - 0.25 * (IDLE_POLLS - i), "source": "vllm", "body": idle_copy(polls[0]["body"])}
        for i in range(IDLE_POLLS)
    ]
    out = tmp / "idle-then-busy.jsonl.gz"
    with gzip.open(out, "wt") as f:
        for e in header + idle + polls:
            f.write(json.dumps(e) + "\n")
    return out, polls


def test_counters_and_gauges_over_idle_and_busy_time(tmp_path: Path) -> None:
    rec, busy = idle_then_busy(tmp_path)
    m = samples(replay(str(rec), "--gpu-source", "none", "--cost-per-hour", "3.6",
                           "--calm-poll-interval", "250ms"))  # fmt: skip
    # 64 idle + 120 busy polls; windows of 9 polls sharing boundaries close at polls 8, 16, …,
    # 176: 22 windows. Polls 0..64 make 8 idle windows (poll 64, the first busy poll, still has
    # the frozen counters: no token moves there); polls 64..176 (busy polls 0..112) make the 14
    # busy windows, all active (test_replay_cli shows it for this recording).
    assert m[("vllm_profile_windows", ())] == 22
    assert m[("vllm_profile_evaluable_windows", ())] == 22
    assert m[("vllm_profile_active_windows", ())] == 14
    t0, t112 = busy[0]["t"], busy[112]["t"]
    busy_s = t112 - t0
    observed_s = busy_s + IDLE_POLLS * 0.25  # the idle stretch is 16 s before t0
    tokens = reference_value(busy[112]["body"], "vllm:generation_tokens_total") - reference_value(
        busy[0]["body"], "vllm:generation_tokens_total"
    )
    assert m[("vllm_profile_observed_seconds_total", ())] == pytest.approx(observed_s, rel=1e-9)
    assert m[("vllm_profile_active_seconds_total", ())] == pytest.approx(busy_s, rel=1e-9)
    assert m[("vllm_profile_observed_generation_tokens_total", ())] == tokens
    # $3.60 an hour is $0.001 a second, busy or idle.
    flag = (("price_source", "flag"),)
    dollars = m[("vllm_profile_observed_cost_dollars_total", flag)]
    assert dollars == pytest.approx(observed_s * 0.001, rel=1e-9)
    # The whole run is within the 60 s horizon: the gauges cover the same seconds.
    duty = busy_s / observed_s
    assert m[("vllm_profile_duty_cycle_ratio", ())] == pytest.approx(duty, rel=1e-9)
    wall = m[("vllm_profile_wall_clock_cost_per_million_tokens_dollars", flag)]
    assert wall == pytest.approx(observed_s * 0.001 / tokens * 1e6, rel=1e-9)
    # While busy, a token costs 3.6 / (tok/s × 3600) × 1e6: the wall-clock figure is that over
    # the duty cycle, higher by the idle seconds' share.
    active = m[("vllm_profile_active_cost_per_million_tokens_dollars", flag)]
    assert active == pytest.approx(3.6 / (tokens / busy_s * 3600) * 1e6, rel=1e-9)
    assert wall == pytest.approx(active / duty, rel=1e-9)
    # No GPU data, no catalog model: no efficiency, so no recoverable cost while busy; and no
    # energy counter without a GPU.
    assert ("vllm_profile_wall_clock_recoverable_cost_per_hour_dollars", flag) not in m
    assert ("vllm_profile_observed_gpu_energy_joules_total", ()) not in m
    # Requests finished, by how they ended: vLLM's own counter between the first and last busy
    # polls (the idle stretch's counters are frozen), read with prometheus_client.
    for reason in ("stop", "length"):
        first, last = (
            sum(
                x.value
                for fam in text_string_to_metric_families(b["body"])
                for x in fam.samples
                if x.name == "vllm:request_success_total"
                and x.labels.get("finished_reason") == reason
            )
            for b in (busy[0], busy[112])
        )
        key = ("vllm_profile_observed_finished_requests_total", (("finished_reason", reason),))
        assert m[key] == last - first


def test_finished_requests_are_kept_for_a_bounded_few_reasons() -> None:
    # A target inventing a new finished_reason in every window keeps no more than 16 counters.
    led = Ledger()
    for i in range(40):
        w = Window(start=2.0 * i, end=2.0 * i + 2, duration=2.0, engine_polls=9, gpu_polls=0,
                   d_finished_by_reason={"stop": 3.0, f"made-up-{i}": 1.0})  # fmt: skip
        led = accrue(led, w, evaluable=True, active=False, cost_per_hour=None, price_source=None)
    assert len(led.finished) == 16 and led.finished["stop"] == 120.0
    # A window vLLM did not answer in adds nothing.
    gap = Window(start=90.0, end=92.0, duration=2.0, engine_polls=9, gpu_polls=0,
                 d_finished_by_reason={"stop": 5.0})  # fmt: skip
    assert accrue(led, gap, evaluable=False, active=False, cost_per_hour=None,
                  price_source=None).finished["stop"] == 120.0  # fmt: skip


def test_an_idle_server_is_all_recoverable(tmp_path: Path) -> None:
    # Only the idle stretch: no active window, no efficiency, no token: the whole $3.60/h is
    # recoverable, the duty cycle is 0, and no cost per token is made up.
    rec, _ = idle_then_busy(tmp_path)
    with gzip.open(rec, "rt") as f:
        lines = [json.loads(line) for line in f][: 1 + IDLE_POLLS]
    idle = tmp_path / "idle.jsonl.gz"
    with gzip.open(idle, "wt") as f:
        f.writelines(json.dumps(e) + "\n" for e in lines)
    m = samples(replay(str(idle), "--gpu-source", "none", "--cost-per-hour", "3.6",
                           "--calm-poll-interval", "250ms"))  # fmt: skip
    flag = (("price_source", "flag"),)
    assert m[("vllm_profile_duty_cycle_ratio", ())] == 0.0
    assert m[("vllm_profile_wall_clock_recoverable_cost_per_hour_dollars", flag)] == 3.6
    assert ("vllm_profile_wall_clock_cost_per_million_tokens_dollars", flag) not in m
    assert ("vllm_profile_active_cost_per_million_tokens_dollars", flag) not in m
    assert m[("vllm_profile_active_seconds_total", ())] == 0.0
    # 64 polls: windows close at polls 8..56, 7 windows of 2 s = 14 s observed, $0.014.
    assert m[("vllm_profile_observed_seconds_total", ())] == pytest.approx(14.0)
    assert m[("vllm_profile_observed_cost_dollars_total", flag)] == pytest.approx(0.014)


def gpu(energy: float | None, power: float | None) -> GpuWindow:
    return GpuWindow(0, "GPU-0", None, None, None, power, None, None, None, None, None, None,
                     None, energy, None)  # fmt: skip


def win(**kw: Any) -> Window:
    base: dict[str, Any] = dict(start=10.0, end=12.0, duration=2.0, engine_polls=9, gpu_polls=9,
                                running=1.0, d_generation_tokens=40.0)  # fmt: skip
    return Window(**{**base, **kw})


class TestLedger:
    def test_energy_counter_else_power_else_nothing(self) -> None:
        # 2 s window: GPU 0's energy counter rose 1,000 J; GPU 1 has only power, 300 W × 2 s.
        assert window_joules(win(gpus=(gpu(1000.0, 400.0), gpu(None, 300.0)))) == 1600.0
        # A GPU with neither: no partial sum (it would read low).
        assert window_joules(win(gpus=(gpu(1000.0, None), gpu(None, None)))) is None
        assert window_joules(win(gpus=())) is None
        # Two energy counters add up, whichever GPU comes first.
        assert window_joules(win(gpus=(gpu(None, 300.0), gpu(1000.0, None)))) == 1600.0
        assert window_joules(win(gpus=(gpu(250.0, None), gpu(1000.0, None)))) == 1250.0
        # Power over a short window: 300 W x 0.5 s; over no time at all there is nothing to say.
        assert window_joules(win(end=10.5, gpus=(gpu(None, 300.0),))) == 150.0
        assert window_joules(win(end=10.0, gpus=(gpu(None, 300.0),))) is None

    def test_only_evaluable_windows_count(self) -> None:
        kw = dict(cost_per_hour=3.6, price_source="flag")
        led = accrue(Ledger(), win(), evaluable=False, active=False, **kw)  # type: ignore[arg-type]
        assert led == Ledger()
        no_span = accrue(Ledger(), win(duration=None), evaluable=True, active=True, **kw)  # type: ignore[arg-type]
        assert no_span == Ledger()
        zero = accrue(Ledger(), win(duration=0.0), evaluable=True, active=True, **kw)  # type: ignore[arg-type]
        assert zero == Ledger()  # not even a $0 series for the price
        # Half a second counts like any span: 0.5 s at $3.60/h is $0.0005.
        short = accrue(Ledger(), win(end=10.5, duration=0.5), evaluable=True, active=True, **kw)  # type: ignore[arg-type]
        assert short.observed_seconds == 0.5 and short.active_seconds == 0.5
        assert dict(short.dollars) == pytest.approx({"flag": 0.0005})

    def test_a_price_needs_its_source(self) -> None:
        # A cost without the source it came from (or the reverse) accrues no dollars.
        for cost, source in ((None, "flag"), (3.6, None)):
            led = accrue(Ledger(), win(), evaluable=True, active=True, cost_per_hour=cost,
                         price_source=source)  # fmt: skip
            assert led.dollars == {} and led.observed_seconds == 2.0

    def test_a_price_change_starts_its_own_series(self) -> None:
        # Two windows of 2 s: the first at $3.60/h from the catalog, the second at $7.20/h from
        # the flag (a reload). Each price keeps its own total; nothing is re-priced.
        led = accrue(Ledger(), win(gpus=(gpu(None, 250.0),)), evaluable=True, active=False,
                     cost_per_hour=3.6, price_source="catalog_on_demand")  # fmt: skip
        led = accrue(led, win(start=12.0, end=14.0, d_generation_tokens=None), evaluable=True,
                     active=True, cost_per_hour=7.2, price_source="flag")  # fmt: skip
        assert dict(led.dollars) == pytest.approx({"catalog_on_demand": 0.002, "flag": 0.004})
        assert (led.observed_seconds, led.active_seconds) == (4.0, 2.0)
        # A window whose token delta is unknown (a reset) adds seconds but no tokens; the second
        # window had no GPU data, so the energy is the first's 250 W × 2 s.
        assert (led.generation_tokens, led.energy_joules) == (40.0, 500.0)
        # No price: seconds and tokens accrue, dollars do not.
        unpriced = accrue(led, win(), evaluable=True, active=True, cost_per_hour=None,
                          price_source=None)  # fmt: skip
        assert unpriced.dollars == led.dollars and unpriced.observed_seconds == 6.0


def replay(*args: str) -> str:
    """``replay ARGS --print-metrics``, in this process."""
    return cli_in_process("replay", *args, "--print-metrics")
