"""Restart or several processes behind one URL (derive/identity.py), at each boundary."""

from __future__ import annotations

from exporter.derive.identity import MAX_RESETS, REBOUND, TargetIdentity


def test_a_start_time_seen_exactly_hold_seconds_ago_is_another_process() -> None:
    # Process A at 0 s, B appears at 1 s (a restart), A again at 61 s: seen 60 s ago, which is
    # within a hold of 60 s — both are alive behind the URL.
    ident = TargetIdentity(hold=60.0)
    assert ident.observe(0.0, 100.0, None) == "same"
    assert ident.observe(1.0, 200.0, None) == "restart"
    assert ident.observe(60.0, 200.0, None) == "same"  # B keeps answering; A last seen at 0 s
    assert ident.observe(60.0 + 0.0, 100.0, None) == "several"


def test_a_start_time_older_than_the_hold_is_a_restart() -> None:
    ident = TargetIdentity(hold=60.0)
    ident.observe(0.0, 100.0, None)
    ident.observe(1.0, 200.0, None)
    assert ident.observe(61.5, 100.0, None) == "restart"  # A last seen 61.5 s ago: gone since
    assert not ident.several


def test_equal_counters_are_no_reset() -> None:
    ident = TargetIdentity()
    assert [ident.observe(t, None, 50.0) for t in (0.0, 1.0, 2.0)] == ["same"] * 3


def test_a_counter_climbing_back_within_the_rebound_is_two_servers() -> None:
    # Without start times: 500 → 3 (a reset), then back above 500 within 10 s: no new process
    # could generate that fast, two are alternating. Exactly back to 500 is not above it.
    ident = TargetIdentity()
    ident.observe(0.0, None, 500.0)
    assert ident.observe(1.0, None, 3.0) == "restart"
    assert ident.observe(2.0, None, 500.0) == "same"
    assert ident.observe(1.0 + REBOUND, None, 501.0) == "several"


def test_a_counter_climbing_back_after_the_rebound_is_one_busy_server() -> None:
    ident = TargetIdentity()
    ident.observe(0.0, None, 500.0)
    ident.observe(1.0, None, 3.0)
    assert ident.observe(1.0 + REBOUND + 0.5, None, 501.0) == "same"


def test_a_reset_with_a_start_time_never_looks_for_a_rebound() -> None:
    # With start times, a counter reset comes with a new start time: judged by those alone.
    ident = TargetIdentity()
    ident.observe(0.0, 100.0, 500.0)
    assert ident.observe(1.0, 200.0, 3.0) == "restart"
    assert ident.observe(2.0, 200.0, 900.0) == "same"


def test_more_than_max_resets_in_the_hold_is_several() -> None:
    # Counters going backwards MAX_RESETS times in the hold is a server restarting often; once
    # more, several. Each reset is 20 s apart, so the rebound test never fires.
    assert MAX_RESETS == 3
    ident = TargetIdentity(hold=120.0)
    verdicts = []
    for k in range(MAX_RESETS + 1):
        t = 20.0 * k
        ident.observe(t, None, 1000.0)
        verdicts.append(ident.observe(t + 10.0, None, 1.0))
    assert verdicts == ["restart"] * MAX_RESETS + ["several"]


def test_resets_older_than_the_hold_are_forgotten() -> None:
    # Three resets, then one exactly a hold after the first: the first still counts (4 > 3).
    ident = TargetIdentity(hold=60.0)
    times = [10.0, 30.0, 50.0]
    for t in times:
        ident.observe(t - 5.0, None, 1000.0)
        ident.observe(t, None, 1.0)
    ident.observe(65.0, None, 1000.0)
    assert ident.observe(70.0, None, 1.0) == "several"  # 70 − 10 = 60: not older than the hold
    other = TargetIdentity(hold=60.0)
    for t in times:
        other.observe(t - 5.0, None, 1000.0)
        other.observe(t, None, 1.0)
    other.observe(66.0, None, 1000.0)
    assert other.observe(70.5, None, 1.0) == "restart"  # the reset at 10 s is 60.5 s old


def test_when_one_process_is_left_it_starts_afresh() -> None:
    # A and B alternate; B goes away. Once A alone has answered for a hold, the verdict is a
    # restart (a new epoch on the one process left), then the same process as usual.
    ident = TargetIdentity(hold=10.0)
    ident.observe(0.0, 100.0, None)
    ident.observe(1.0, 200.0, None)
    assert ident.observe(2.0, 100.0, None) == "several" and ident.several is True
    assert ident.observe(5.0, 100.0, None) == "several"  # B seen 4 s ago
    assert ident.observe(11.5, 100.0, None) == "restart"  # B last seen 10.5 s ago
    assert ident.several is False
    assert ident.observe(12.0, 100.0, None) == "same"
    assert TargetIdentity().several is False


def test_the_default_hold_is_a_minute() -> None:
    ident = TargetIdentity()
    ident.observe(0.0, 100.0, None)
    ident.observe(1.0, 200.0, None)
    assert ident.observe(60.5, 100.0, None) == "restart"  # A last seen 60.5 s ago
