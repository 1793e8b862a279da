"""Rules R1-R5 on both sides of every threshold (docs/rules.md), persistence, grouping and
direction."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from exporter.app import load_catalog
from exporter.config import load_config
from exporter.derive.assess import assess
from exporter.derive.diagnosis import diagnose
from exporter.derive.direction import Summary, compare, summarize
from exporter.derive.horizon import Aggregate, GpuAggregate
from exporter.derive.resolve import RooflineSettings
from exporter.derive.rule_advice import FIXES, Horizon
from exporter.derive.rules import (
    ALL_RULES,
    BY_KEY,
    R1,
    R2_BACKLOG,
    R2_MAIN,
    R3,
    R4,
    R5,
    RULES,
    RuleResult,
    evaluate_window,
)
from exporter.derive.window import GpuWindow, Window, build_window
from exporter.engines.vllm.serving import serving_config
from exporter.pipeline import Pipeline
from tests.helpers import H100_MEMORY, H100_NAME, INF, gpu, hist, tick, vllm

LAT = (0.5, 1.0, INF)
PLEN = (10.0, 100.0, 1000.0, INF)


def window(
    *,
    duration: float = 2.0,
    running: float = 1.0,
    waiting: float = 0.0,
    kv: tuple[float, float] = (0.1, 0.1),
    prefill_sum: float = 0.1,
    preemptions: float = 0.0,
    hits_queries: tuple[float, float] | None = None,
    finished: float = 0.0,
    prompt_mean: float = 50.0,
    cache_config: dict[str, str] | None = None,
    gpu_at: float | None = None,
    vram: float | None = None,
) -> Any:
    """A two-poll window whose deltas are exactly the arguments."""
    t0, t1 = 100.0, 100.0 + duration
    cc = cache_config if cache_config is not None else {"num_gpu_blocks": "100", "block_size": "16"}

    def poll(t: float, i: int, kv_v: float) -> Any:
        # One finished request per window carries the prompt length and prefill time.
        return vllm(
            t,
            running=running,
            waiting=waiting,
            kv_usage=kv_v,
            preemptions=10.0 + i * preemptions,
            requests_finished=100.0 + i * finished,
            prefix_hits=None if hits_queries is None else 1000.0 + i * hits_queries[0],
            prefix_queries=None if hits_queries is None else 2000.0 + i * hits_queries[1],
            prefill_time=hist(LAT, (5.0 + i, 5.0 + i, 5.0 + i), 0.0 + i * prefill_sum),
            prompt_len=hist(PLEN, (0.0, 5.0 + i, 5.0 + i, 5.0 + i), 250.0 + i * prompt_mean),
            serving=serving_config(cc),
        )

    polls = [poll(t0, 0, kv[0]), poll(t1, 1, kv[1])]
    gpus = []
    if gpu_at is not None:
        gpus = [gpu(gpu_at, dict(mem_used_bytes=(vram or 0.5) * 100e9, mem_total_bytes=100e9))]
    return build_window(polls, gpus, start=t0, end=t1)


def rule(key: tuple[str, str], mns: float | None = 64.0, **kw: Any) -> RuleResult:
    return evaluate_window(window(**kw), mns)[key]


def bare(**fields: Any) -> Window:
    """A 2 s evaluable window holding only the given figures (everything else absent)."""
    return Window(start=100.0, end=102.0, duration=2.0, engine_polls=9, gpu_polls=0, **fields)


CC = {"num_gpu_blocks": "100", "block_size": "10"}  # 1,000 tokens of KV


class TestRuleRecords:
    """Each rule's exact answer: fired or not, the numbers shown (diagnose, rule_skipped and
    issue_info read them), or why it was skipped. Values worked by hand from
    the rules in docs/rules.md.
    """

    @pytest.mark.parametrize(
        ("key", "mns", "w", "code", "why"),
        [
            (R1, None, bare(running=1.0, waiting=0.0), "max_num_seqs_unknown",
             "max_num_seqs unknown: pass --max-num-seqs"),
            (R1, 64.0, bare(running=1.0), "no_waiting_count", "vLLM reported no waiting count"),
            (R1, 64.0, bare(running=1.0, waiting=0.0), "no_prefill_delta",
             "no prefill-time delta in this window (reset or missing histogram)"),
            (R2_MAIN, 64.0, bare(running=1.0), "no_kv_data", "no KV usage or preemption data"),
            (R2_BACKLOG, None, bare(running=1.0), "max_num_seqs_unknown",
             "max_num_seqs unknown: pass --max-num-seqs"),
            (R2_BACKLOG, 64.0, bare(running=1.0, kv_usage=0.5, waiting=1.0, prompt_len_mean=5.0),
             "kv_capacity_unknown", "KV capacity unknown (no cache_config_info)"),
            (R5, None, bare(running=1.0, waiting=0.0), "max_num_seqs_unknown",
             "max_num_seqs unknown: pass --max-num-seqs"),
            (R5, 64.0, bare(running=1.0), "no_waiting_count", "vLLM reported no waiting count"),
        ],
    )  # fmt: skip
    def test_skipped(self, key: Any, mns: float | None, w: Window, code: str, why: str) -> None:
        # The code is the exported label (fixed, short); the sentence is what diagnose shows.
        assert evaluate_window(w, mns)[key] == RuleResult(False, why, skipped=code)

    @pytest.mark.parametrize("absent", ["kv_usage", "waiting", "prompt_len_mean"])
    def test_backlog_needs_each_of_its_inputs(self, absent: str) -> None:
        present = dict(running=1.0, kv_usage=0.5, waiting=1.0, prompt_len_mean=5.0)
        del present[absent]
        r = evaluate_window(bare(serving=serving_config(CC), kv_peak=0.5, **present), 64.0)[
            R2_BACKLOG
        ]
        assert r == RuleResult(False, "no KV usage, waiting count or prompt length",
                               skipped="no_backlog_inputs")  # fmt: skip

    def test_r1_needs_a_duration_for_the_prefill_share(self) -> None:
        w = replace(window(), duration=None)
        assert evaluate_window(w, 64.0)[R1].skipped == "no_prefill_delta"

    def test_r1_texts(self) -> None:
        # running 1 of 64: occupancy 1.5625% → "2%"; 0 waiting; prefill 0.1 s over 2 s (5%).
        assert rule(R1) == RuleResult(True, "occupancy 2% (1.0 of 64), 0.0 waiting")
        assert rule(R1, running=0.0) == RuleResult(False, "not triggered (no running requests)")
        assert rule(R1, running=32.0) == RuleResult(False, "not triggered (occupancy 50%)")
        assert rule(R1, waiting=3.0) == RuleResult(False, "not triggered (3.0 waiting)")
        # 1.0 s of prefill in 2 s: 50% ≥ 40%.
        assert rule(R1, prefill_sum=1.0) == RuleResult(
            False, "not triggered (prefill saturated at 50%)")  # fmt: skip

    def test_r2_main_on_either_input_alone(self) -> None:
        # Preemptions without KV usage: fired on the preemptions, the peak read as 0%.
        only_preempt = evaluate_window(bare(running=1.0, d_preemptions=2.0), 64.0)[R2_MAIN]
        assert only_preempt == RuleResult(True, "KV peak 0%, 2 preemptions", preempting=True)
        only_kv = evaluate_window(bare(running=1.0, kv_peak=0.9), 64.0)[R2_MAIN]
        assert only_kv == RuleResult(True, "KV peak 90%")
        quiet = evaluate_window(bare(running=1.0, d_preemptions=0.0), 64.0)[R2_MAIN]
        assert quiet == RuleResult(False, "not triggered (KV peak 0%, no preemptions)")

    def test_r2_main_texts(self) -> None:
        # KV peak 96% (critical), 3 preemptions, VRAM 90% corroborates.
        r = rule(R2_MAIN, kv=(0.5, 0.96), preemptions=3.0, gpu_at=101.0, vram=0.9)
        assert r == RuleResult(True, "KV peak 96%, 3 preemptions, VRAM 90%", preempting=True,
                               kv_critical=True)  # fmt: skip
        # A GPU whose memory reading failed adds no VRAM fact and breaks nothing.
        w = bare(running=1.0, kv_peak=0.9, gpus=(GpuWindow(0, "GPU-0", None, None, None, None,
                 None, None, None, 100e9, None, None, None, None, None),))  # fmt: skip
        assert evaluate_window(w, 64.0)[R2_MAIN].why == "KV peak 90%"

    def test_source_skew_of_exactly_one_second_is_allowed(self) -> None:
        # vLLM's last poll at 102.0 s, the GPU's at 101.0 / 100.5 s: 1.0 s apart is within the
        # limit, 1.5 s is not, for both R2 paths.
        at_limit = evaluate_window(replace(window(gpu_at=101.0), engine_observed_at=102.0), 64.0)
        assert at_limit[R2_MAIN].skipped is None and at_limit[R2_BACKLOG].skipped is None
        over = evaluate_window(replace(window(gpu_at=100.5), engine_observed_at=102.0), 64.0)
        # The label is a fixed code; the skew itself is in the text diagnose shows.
        assert over[R2_MAIN].skipped == over[R2_BACKLOG].skipped == "source_skew"
        assert over[R2_MAIN].why == over[R2_BACKLOG].why == "GPU and vLLM readings 1.5s apart"

    def test_backlog_texts_and_boundaries(self) -> None:
        # Capacity 1,000 tokens, KV 50% → 500 free; 2 waiting × 250 prompt tokens = 500: not
        # less than the free KV, so not fired (demand must exceed free).
        base = dict(serving=serving_config(CC), kv_usage=0.5, kv_peak=0.5, prompt_len_mean=250.0)
        even = evaluate_window(bare(running=1.0, waiting=2.0, **base), 4.0)[R2_BACKLOG]
        assert even == RuleResult(False, "not triggered (queue ratio 67%; free KV 500 tokens vs "
                                  "demand 500 (2.0 waiting x 250 prompt tokens); running 1.0 of "
                                  "4)")  # fmt: skip
        # 3 waiting: demand 750 > 500 free; queue ratio 3 / 4 = 75%; running 1 < 4: fired.
        more = evaluate_window(bare(running=1.0, waiting=3.0, **base), 4.0)[R2_BACKLOG]
        assert more == RuleResult(
            True, "queue ratio 75%; free KV 500 tokens vs demand 750 (3.0 waiting x 250 prompt "
            "tokens); running 1.0 of 4")  # fmt: skip
        # No running request at all on a cap of 1: 0 < 1, queue ratio 100%: fired.
        idle = evaluate_window(bare(running=0.0, waiting=3.0, **base), 1.0)[R2_BACKLOG]
        assert idle.fired and idle.why.startswith("queue ratio 100%")
        # With the main path firing too (KV peak 90%), the backlog path steps aside.
        both = evaluate_window(bare(running=1.0, waiting=3.0, **dict(base, kv_peak=0.9)), 4.0)
        assert both[R2_BACKLOG] == RuleResult(False, "suppressed by the main path")

    def test_queue_ratio_of_fractional_and_empty_means(self) -> None:
        # Time-weighted means below one: running 0.5, waiting 0.25 → 0.25 / 0.75 = 33%.
        base = dict(serving=serving_config(CC), kv_usage=0.5, kv_peak=0.5, prompt_len_mean=10.0)
        r = evaluate_window(bare(running=0.5, waiting=0.25, **base), 4.0)[R2_BACKLOG]
        assert r.why.startswith("not triggered (queue ratio 33%;")
        empty = evaluate_window(bare(running=0.0, waiting=0.0, **base), 4.0)[R2_BACKLOG]
        assert empty.why.startswith("not triggered (queue ratio 0%;")

    def test_r3_texts(self) -> None:
        # Δhits 20 / Δqueries 100 = 20%; 50 prompt tokens; 12 finished in 2 s = 6.0 req/s.
        fired = rule(R3, running=4.0, hits_queries=(20.0, 100.0), finished=12.0)
        assert fired == RuleResult(True, "prefix hit rate 20%, 50 prompt tokens, 6.0 req/s, "
                                   "4.0 running")  # fmt: skip
        off = rule(R3, running=4.0, hits_queries=(20.0, 100.0), finished=12.0,
                   cache_config={"enable_prefix_caching": "False"})  # fmt: skip
        assert off.fired and off.why.startswith("prefix hit rate 0% (prefix caching disabled), ")
        # No request running: not fired, whatever the rest.
        idle = rule(R3, running=0.0, hits_queries=(20.0, 100.0), finished=12.0)
        assert idle == RuleResult(False, "not triggered (prefix hit rate 20%, 50 prompt tokens, "
                                  "6.0 req/s, 0.0 running)")  # fmt: skip
        assert rule(R3) == RuleResult(
            False, "not triggered (no prefix-cache queries or finished requests)")  # fmt: skip
        # Hits known but no finished request in the window: no request rate, not triggered.
        no_rate = evaluate_window(bare(running=4.0, d_prefix_hits=2.0, d_prefix_queries=10.0,
                                       prompt_len_mean=50.0), 64.0)[R3]  # fmt: skip
        assert no_rate.why == "not triggered (no prefix-cache queries or finished requests)"

    def test_r5_texts(self) -> None:
        r = rule(R5, mns=8.0, running=8.0, waiting=4.0)  # 4 / 12 = 33%
        assert r == RuleResult(True, "running 8.0 of 8, 4.0 waiting (queue ratio 33%)")
        # Nothing running on a cap of 1 is 1 away from it: not saturated, however long the queue.
        idle = rule(R5, mns=1.0, running=0.0, waiting=3.0)
        assert idle == RuleResult(False, "not triggered (running 0.0 of 1, 3.0 waiting (queue "
                                  "ratio 100%))")  # fmt: skip

    @pytest.mark.parametrize("empty", ["", "None"])
    def test_kv_capacity_falls_back_to_blocks(self, empty: str) -> None:
        # vLLM writes an unset kv_cache_size_tokens as "" or "None": 12 blocks × 128 tokens.
        cc = {"kv_cache_size_tokens": empty, "num_gpu_blocks": "12", "block_size": "128"}
        assert serving_config(cc).kv_capacity_tokens == 1536.0
        assert serving_config({"kv_cache_size_tokens": "4096"}).kv_capacity_tokens == 4096.0
        assert serving_config({"num_gpu_blocks": "12"}).kv_capacity_tokens is None
        # A body's label is a stranger's text: nothing but a finite positive size is a size.
        for bad in ("inf", "nan", "-5", "0"):
            assert serving_config({"kv_cache_size_tokens": bad}).kv_capacity_tokens is None


class TestDataParallel:
    """vLLM's --max-num-seqs holds per engine and the running count is summed over engines: a
    server of 2 engines at --max-num-seqs 4 runs up to 8 requests at once."""

    def test_the_cap_counts_every_engine(self) -> None:
        w = replace(window(running=8.0, waiting=4.0), engines=2)
        # 8 running of 4 x 2 = 8: at the cap.
        assert evaluate_window(w, 4.0)[R5] == RuleResult(
            True, "running 8.0 of 8, 4.0 waiting (queue ratio 33%)"
        )
        # 6 running of 8, 4 waiting: 2 away from the cap, not saturated (one engine's 4 would
        # have read it as 2 over the cap).
        half = replace(window(running=6.0, waiting=4.0), engines=2)
        assert not evaluate_window(half, 4.0)[R5].fired
        # R1: 1.9 / 8 = 24% < 25% fires; 2.0 / 8 = 25% does not (one engine: 50%).
        assert evaluate_window(replace(window(running=1.9), engines=2), 4.0)[R1].fired
        r = evaluate_window(replace(window(running=2.0), engines=2), 4.0)[R1]
        assert not r.fired and "occupancy 25%" in r.why

    def test_advice_names_the_cap_per_engine(self) -> None:
        agg = Aggregate(running=2.0, waiting=0.5, engines=2)
        advice = BY_KEY[R1].advice(Horizon(3, 10, agg, None, 4.0))
        assert advice.evidence == (
            "occupancy 25% of --max-num-seqs 4 x 2 engines, 0.5 waiting, in 3 of 10 windows"
        )


class TestR1:
    def test_occupancy_boundary(self) -> None:
        # 15.9 / 64 = 24.8% < 25% fires; 16 / 64 = 25% exactly does not.
        assert rule(R1, running=15.9).fired
        r = rule(R1, running=16.0)
        assert not r.fired and "occupancy 25%" in r.why

    def test_waiting_boundary(self) -> None:
        assert rule(R1, waiting=1.9).fired
        r = rule(R1, waiting=2.0)
        assert not r.fired and "2.0 waiting" in r.why

    def test_prefill_share_boundary(self) -> None:
        # Δprefill_sum / 2 s: 0.79 s → 39.5% fires; 0.80 s → 40% is saturated.
        assert rule(R1, prefill_sum=0.79).fired
        r = rule(R1, prefill_sum=0.80)
        assert not r.fired and r.why == "not triggered (prefill saturated at 40%)"

    def test_prefill_absolute_boundary(self) -> None:
        # A 20 s window: 3.99 s of prefill (20% share) fires; 4.0 s does not, at a 20% share.
        assert rule(R1, duration=20.0, prefill_sum=3.99).fired
        r = rule(R1, duration=20.0, prefill_sum=4.0)
        assert not r.fired and "prefill saturated at 20%" in r.why

    def test_idle_and_unknown_cap(self) -> None:
        assert rule(R1, running=0.0).why == "not triggered (no running requests)"
        r = rule(R1, mns=None)
        assert (r.skipped, r.why) == (
            "max_num_seqs_unknown",
            "max_num_seqs unknown: pass --max-num-seqs",
        )


class TestR2Main:
    def test_kv_peak_boundary_uses_the_peak(self) -> None:
        # Mean (0.5 + 0.88) / 2 = 69%, but the peak 88% fires; 87.9% does not.
        r = rule(R2_MAIN, kv=(0.5, 0.88))
        assert r.fired and "KV peak 88%" in r.why and not r.kv_critical
        assert not rule(R2_MAIN, kv=(0.5, 0.879)).fired

    def test_critical_boundary(self) -> None:
        assert rule(R2_MAIN, kv=(0.95, 0.5)).kv_critical
        assert not rule(R2_MAIN, kv=(0.949, 0.5)).kv_critical

    def test_preemptions_fire_alone(self) -> None:
        r = rule(R2_MAIN, kv=(0.1, 0.1), preemptions=1.0)
        assert r.fired and r.preempting and "1 preemptions" in r.why

    def test_vram_corroborates_but_is_not_required(self) -> None:
        assert "VRAM 78%" in rule(R2_MAIN, kv=(0.9, 0.9), gpu_at=102.0, vram=0.78).why
        assert "VRAM" not in rule(R2_MAIN, kv=(0.9, 0.9), gpu_at=102.0, vram=0.77).why
        assert not rule(R2_MAIN, kv=(0.1, 0.1), gpu_at=102.0, vram=0.99).fired

    def test_source_skew_skips(self) -> None:
        # vLLM's last poll at 102.0: GPU at 103.0 is 1.0 s apart (kept), 103.1 is skipped.
        assert rule(R2_MAIN, kv=(0.9, 0.9), gpu_at=103.0).fired
        r = rule(R2_MAIN, kv=(0.9, 0.9), gpu_at=103.1)
        assert (r.skipped, r.why) == ("source_skew", "GPU and vLLM readings 1.1s apart")


class TestR2Backlog:
    # Capacity 100 blocks × 16 = 1,600 tokens; KV 50% used → 800 free.
    # Demand = waiting × prompt mean (50 tokens per finished request here).

    def test_queue_ratio_boundary(self) -> None:
        # running 7, waiting 3: 3 / 10 = 30% fires; demand 3 × 300 = 900 > 800 free.
        r = rule(R2_BACKLOG, running=7.0, waiting=3.0, kv=(0.5, 0.5), prompt_mean=300.0)
        assert r.fired and "queue ratio 30%" in r.why
        # waiting 2.99: 2.99 / 9.99 = 29.9% does not.
        r = rule(R2_BACKLOG, running=7.0, waiting=2.99, kv=(0.5, 0.5), prompt_mean=300.0)
        assert not r.fired

    def test_free_kv_must_be_short(self) -> None:
        # demand 3 × 266 = 798 < 800 free: the pool can admit them.
        r = rule(R2_BACKLOG, running=7.0, waiting=3.0, kv=(0.5, 0.5), prompt_mean=266.0)
        assert not r.fired and "free KV 800 tokens vs demand 798" in r.why

    def test_at_the_cap_it_is_not_kv(self) -> None:
        r = rule(R2_BACKLOG, mns=7.0, running=7.0, waiting=3.0, kv=(0.5, 0.5), prompt_mean=300.0)
        assert not r.fired

    def test_main_path_suppresses_backlog(self) -> None:
        r = rule(R2_BACKLOG, running=7.0, waiting=3.0, kv=(0.5, 0.9), prompt_mean=300.0)
        assert not r.fired and r.why == "suppressed by the main path"

    def test_kv_cache_size_tokens_preferred(self) -> None:
        cc = {"kv_cache_size_tokens": "10000", "num_gpu_blocks": "100", "block_size": "16"}
        r = rule(R2_BACKLOG, running=7.0, waiting=3.0, kv=(0.5, 0.5), prompt_mean=300.0,
                 cache_config=cc)  # fmt: skip
        assert not r.fired and "free KV 5,000 tokens" in r.why


class TestR3:
    # Δhits / Δqueries; 10 finished requests in 2 s = 5 req/s; prompt mean as given.
    base: dict[str, Any] = dict(finished=10.0, prompt_mean=100.0, running=2.0)

    def test_hit_rate_boundary(self) -> None:
        assert rule(R3, hits_queries=(349.0, 1000.0), **self.base).fired
        r = rule(R3, hits_queries=(350.0, 1000.0), **self.base)
        assert not r.fired and "prefix hit rate 35%" in r.why

    def test_prompt_boundary(self) -> None:
        kw = {**self.base, "prompt_mean": 20.0}
        assert rule(R3, hits_queries=(0.0, 1000.0), **kw).fired
        kw["prompt_mean"] = 19.9
        assert not rule(R3, hits_queries=(0.0, 1000.0), **kw).fired

    def test_request_rate_boundary(self) -> None:
        kw = {**self.base, "finished": 9.98}  # 4.99 req/s
        assert not rule(R3, hits_queries=(0.0, 1000.0), **kw).fired
        assert rule(R3, hits_queries=(0.0, 1000.0), **self.base).fired  # 5.0 req/s

    def test_running_boundary(self) -> None:
        assert not rule(R3, hits_queries=(0.0, 1000.0), **{**self.base, "running": 0.75}).fired
        assert rule(R3, hits_queries=(0.0, 1000.0), **{**self.base, "running": 0.76}).fired

    def test_prefix_caching_disabled_counts_as_no_reuse(self) -> None:
        cc = {"enable_prefix_caching": "False"}
        r = rule(R3, hits_queries=(0.0, 0.0), cache_config=cc, **self.base)
        assert r.fired and "prefix caching disabled" in r.why
        # Enabled but no queries in the window: nothing to judge.
        assert not rule(R3, hits_queries=(0.0, 0.0), **self.base).fired


class TestR5:
    def test_cap_distance_boundary(self) -> None:
        # 7.5 of 8 is 0.5 from the cap and fires; 7.49 (0.51 away) does not.
        # 4 waiting keeps the queue ratio above 30%: 4 / 11.5 = 34.8%.
        assert rule(R5, mns=8.0, running=7.5, waiting=4.0).fired
        assert not rule(R5, mns=8.0, running=7.49, waiting=4.0).fired

    def test_waiting_boundary(self) -> None:
        # running 4 of 4; waiting 2 → 2 / 6 = 33% fires; 1.99 waiting does not.
        assert rule(R5, mns=4.0, running=4.0, waiting=2.0).fired
        r = rule(R5, mns=4.0, running=4.0, waiting=1.99)
        assert not r.fired and r.why.startswith("not triggered (running 4.0 of 4")

    def test_queue_ratio_boundary(self) -> None:
        # running 14 of 14: 6 waiting → 6 / 20 = 30% fires; 5.99 → 29.97% does not.
        assert rule(R5, mns=14.0, running=14.0, waiting=6.0).fired
        assert not rule(R5, mns=14.0, running=14.0, waiting=5.99).fired

    @staticmethod
    def churn(peak: float, capacity: float | None, waiting: float = 12.0) -> RuleResult:
        """Short requests at --max-num-seqs 8: the mean of running 7 (slots free between steps),
        12 waiting, ``capacity`` of them for the scheduler's capacity, running at most ``peak``."""
        w = replace(bare(running=7.0, waiting=waiting), running_peak=peak,
                    waiting_capacity=capacity)  # fmt: skip
        return evaluate_window(w, 8.0)[R5]

    def test_the_cap_reached_with_a_capacity_queue_fires_despite_churn(self) -> None:
        # The cap test alone misses it: |7 - 8| = 1 > 0.5.
        r = self.churn(peak=8.0, capacity=12.0)
        # 12 / (7 + 12) = 63% of the requests wait for capacity
        assert r.fired and r.why == (
            "running 7.0 of 8 (peak 8), 12.0 waiting for capacity of 12.0 (queue ratio 63%)"
        )

    def test_no_capacity_evidence_keeps_the_cap_test(self) -> None:
        # vLLM < 0.20 says nothing of why requests wait: the original threshold stays.
        assert not self.churn(peak=8.0, capacity=None).fired

    def test_a_queue_not_caused_by_the_cap_stays_silent(self) -> None:
        # Below the cap all window long (the KV cache or the token budget holds requests back):
        assert not self.churn(peak=7.0, capacity=12.0).fired
        # At the cap, but the queue is deferred requests (LoRA budget, KV transfer):
        assert not self.churn(peak=8.0, capacity=0.0).fired
        # Boundaries: 2 waiting for capacity fires, 1.99 does not; 3 of 7 + 3 = 30% fires.
        assert self.churn(peak=8.0, capacity=3.0).fired
        assert not self.churn(peak=8.0, capacity=1.99).fired
        w = replace(bare(running=7.0, waiting=3.0), running_peak=8.0, waiting_capacity=2.9)
        assert not evaluate_window(w, 8.0)[R5].fired  # 2.9 / 9.9 = 29.3%

    def test_exactly_two_waiting_for_capacity_fires(self) -> None:
        # --max-num-seqs 4, running 3 on average (peak 4): 2 waiting for capacity is 2 / 5 = 40%
        # of the requests; 1.99 is below the two.
        def r5(capacity: float) -> RuleResult:
            w = replace(bare(running=3.0, waiting=capacity), running_peak=4.0,
                        waiting_capacity=capacity)  # fmt: skip
            return evaluate_window(w, 4.0)[R5]

        assert r5(2.0).fired and not r5(1.99).fired


def results(pattern: list[bool], key: tuple[str, str] = R1, **flags: bool) -> list[dict]:
    return [{key: RuleResult(f, **(flags if f else {}))} for f in pattern]


class TestPersistence:
    def significant(self, pattern: list[bool], key: tuple[str, str] = R1, **flags: bool) -> bool:
        d = diagnose(results(pattern, key, **flags), Aggregate(), None, 64.0)
        return next(s for s in d.rules if s.key == key).significant

    def test_two_of_thirty_is_noise(self) -> None:
        assert not self.significant([True] * 2 + [False] * 28)

    def test_three_of_twelve_is_significant(self) -> None:
        assert self.significant([True] * 3 + [False] * 9)  # 3 windows, 25%

    def test_three_of_thirteen_is_not(self) -> None:
        assert not self.significant([True] * 3 + [False] * 10)  # 23% < 25%

    def test_one_preemption_window_is_enough(self) -> None:
        assert self.significant([True] + [False] * 29, R2_MAIN, preempting=True)
        assert not self.significant([True] + [False] * 29, R2_MAIN)

    def test_kv_critical_twice_is_enough(self) -> None:
        assert self.significant([True] * 2 + [False] * 28, R2_MAIN, kv_critical=True)
        assert not self.significant([True] + [False] * 29, R2_MAIN, kv_critical=True)

    def test_backlog_uses_the_standard_gate(self) -> None:
        assert not self.significant([True] * 2 + [False] * 2, R2_BACKLOG)
        assert self.significant([True] * 3 + [False] * 2, R2_BACKLOG)


class TestGroups:
    def test_one_primary_per_group_sorted_by_score(self) -> None:
        # R5 in 6 of 10 windows, R1 in 3 of 10 (same group: R5 primary, R1 supporting),
        # R3 in 8 of 10 (its own group, higher score: listed first).
        windows = []
        for i in range(10):
            windows.append({
                R5: RuleResult(i < 6), R1: RuleResult(i >= 7), R3: RuleResult(i < 8),
                R2_MAIN: RuleResult(False), R2_BACKLOG: RuleResult(False),
            })  # fmt: skip
        d = diagnose(windows, Aggregate(), None, 8.0)
        assert [g.group for g in d.groups] == ["cache_reuse", "scheduling"]
        sched = d.groups[1]
        assert sched.primary.key == R5 and [s.key for s in sched.supporting] == [R1]
        assert sched.primary.score == pytest.approx(0.6)

    def test_tie_broken_by_rule_order(self) -> None:
        windows = [{R5: RuleResult(True), R1: RuleResult(True)} for _ in range(4)]
        d = diagnose(windows, Aggregate(), None, 8.0)
        assert d.groups[0].primary.key == R5  # R5 before R1 at equal scores

    def test_fix_carries_the_numbers(self) -> None:
        windows = [{R2_MAIN: RuleResult(True, preempting=True)} for _ in range(12)] + [
            {R2_MAIN: RuleResult(False)} for _ in range(18)
        ]
        agg = Aggregate(kv_usage_peak=0.97, kv_usage_mean=0.8, preemptions_per_second=0.8)
        (g,) = diagnose(windows, agg, None, 8.0).groups
        assert (
            g.primary.evidence == "KV peak 97% (mean 80%) in 12 of 30 windows; 0.80 preemptions/s"
        )
        assert g.primary.fix == "Reduce --max-num-seqs or --max-model-len."

    def test_r5_fix_depends_on_kv_peak(self) -> None:
        windows = [{R5: RuleResult(True)} for _ in range(4)]
        low = diagnose(windows, Aggregate(kv_usage_peak=0.79), None, 8.0).groups[0].primary
        high = diagnose(windows, Aggregate(kv_usage_peak=0.80), None, 8.0).groups[0].primary
        assert low.fix.startswith("Raise --max-num-seqs")
        assert high.fix.startswith("Add a replica or lower --max-model-len")


class TestDirection:
    def test_better(self) -> None:
        # 100 × (0.30/8 − 0.10/8) = 3.75 − 1.25 = +2.5 pp > +2.0; TTFT p99 +10% (no veto).
        d = compare(Summary(0.10, 8.0, 1000.0, 1.0), Summary(0.30, 8.0, 3000.0, 1.1))
        assert d.direction == "better" and d.signal == "efficiency"
        assert d.efficiency_delta_pp == pytest.approx(2.5)
        assert d.ttft_p99_delta_pct == pytest.approx(10.0)

    def test_worse(self) -> None:
        # 100 × (0.10/2 − 0.30/2) = 5 − 15 = −10 pp < −5.
        d = compare(Summary(0.30, 2.0, 3000.0, 1.0), Summary(0.10, 2.0, 1000.0, 1.0))
        assert d.direction == "worse" and d.efficiency_delta_pp == pytest.approx(-10.0)

    def test_plateau_between_thresholds(self) -> None:
        # 100 × (0.20/4 − 0.30/4) = −2.5 pp: neither < −5 nor > +2.
        d = compare(Summary(0.30, 4.0, 3000.0, 1.0), Summary(0.20, 4.0, 2000.0, 1.0))
        assert d.direction == "plateau"

    def test_concurrency_change_cancels(self) -> None:
        # Twice the traffic doubles efficiency and running: per request, nothing changed.
        d = compare(Summary(0.2, 4.0, 2000.0, 1.0), Summary(0.4, 8.0, 4000.0, 1.0))
        assert d.direction == "plateau" and d.efficiency_delta_pp == pytest.approx(0.0)

    def test_latency_veto(self) -> None:
        # +2.5 pp would be better, but TTFT p99 1.0 → 1.21 s is +21% > +20%: plateau.
        d = compare(Summary(0.10, 8.0, 1000.0, 1.0), Summary(0.30, 8.0, 3000.0, 1.21))
        assert d.direction == "plateau" and d.vetoed
        # At exactly +20% there is no veto: 0.625 → 0.75 s is 100 × 0.125 / 0.625 = 20.0 exactly
        # in binary floating point (1.0 → 1.2 would be 19.999999999999996).
        exact = compare(Summary(0.10, 8.0, 1000.0, 0.625), Summary(0.30, 8.0, 3000.0, 0.75))
        assert exact.ttft_p99_delta_pct == 20.0
        assert exact.direction == "better" and not exact.vetoed

    @pytest.mark.parametrize(
        ("after_efficiency", "verdict"),
        [
            # Running 25 on both sides: per-request pp = 100 × e / 25 = 4e, exact in binary.
            # Before: e = 0.25 → 1.0 pp. Better needs delta > +2.0; worse needs < −5.0.
            (0.75, "plateau"),  # exactly +2.0 pp: not better
            (0.7578125, "better"),  # +2.03125 pp
            (0.84375, "better"),  # +2.375 pp: a threshold moved to 2.4 would call it plateau
        ],
    )
    def test_efficiency_boundaries(self, after_efficiency: float, verdict: str) -> None:
        d = compare(Summary(0.25, 25.0, 1000.0), Summary(after_efficiency, 25.0, 1000.0))
        assert d.signal == "efficiency" and d.direction == verdict, d.efficiency_delta_pp

    @pytest.mark.parametrize(
        ("before_efficiency", "verdict"),
        [
            # After: e = 0.25 → 1.0 pp. Before 1.5 → 6.0 pp: exactly −5.0, not worse.
            (1.5, "plateau"),
            (1.5078125, "worse"),  # −5.03125 pp
            (1.25, "plateau"),  # −4.0 pp
        ],
    )
    def test_worse_efficiency_boundary(self, before_efficiency: float, verdict: str) -> None:
        d = compare(Summary(before_efficiency, 25.0, 1000.0), Summary(0.25, 25.0, 1000.0))
        assert d.direction == verdict, d.efficiency_delta_pp

    @pytest.mark.parametrize(
        ("after_tps", "verdict"),
        [
            (1100.0, "plateau"),  # exactly +10%: not better
            (1100.5, "better"),
            (900.0, "plateau"),  # exactly −10%: not worse
            (899.5, "worse"),
            (870.0, "worse"),  # −13%: a threshold moved to −14% would call it plateau
            (1130.0, "better"),  # +13%
        ],
    )
    def test_throughput_boundaries(self, after_tps: float, verdict: str) -> None:
        d = compare(Summary(None, 4.0, 1000.0), Summary(None, 4.0, after_tps))
        assert d.signal == "throughput" and d.direction == verdict, d.throughput_delta_pct

    def test_throughput_fallback_without_efficiency(self) -> None:
        # No catalog match: throughput 1000 → 1150 (+15%) better, → 850 (−15%) worse,
        # → 1050 (+5%) plateau; the latency veto does not apply on this path.
        up = compare(Summary(None, 4.0, 1000.0, 1.0), Summary(None, 4.0, 1150.0, 5.0))
        assert (up.direction, up.signal, up.vetoed) == ("better", "throughput", False)
        assert compare(Summary(None, 4.0, 1000.0), Summary(None, 4.0, 850.0)).direction == "worse"
        assert (
            compare(Summary(None, 4.0, 1000.0), Summary(None, 4.0, 1050.0)).direction == "plateau"
        )
        assert compare(Summary(), Summary()).signal == "none"


class TestDirectionRecord:
    """What a comparison carries, not only its verdict: the report and the alerts read it."""

    def test_summarize_takes_each_figure_from_its_place(self) -> None:
        agg = Aggregate(running_active=6.0, generation_tps=900.0, ttft_p99=0.4, tpot_p99=0.03)
        assessment = SimpleNamespace(
            roofline=SimpleNamespace(efficiency=0.35),
            economics=SimpleNamespace(cost_per_million_tokens=1.25),
        )
        s = summarize(agg, assessment)  # type: ignore[arg-type]
        assert s == Summary(efficiency=0.35, running=6.0, generation_tps=900.0, ttft_p99=0.4,
                            tpot_p99=0.03, cost_per_million_tokens=1.25)  # fmt: skip
        bare = summarize(agg, None)
        assert (bare.efficiency, bare.cost_per_million_tokens) == (None, None)
        assert (bare.running, bare.generation_tps, bare.tpot_p99) == (6.0, 900.0, 0.03)

    def test_the_record_holds_both_sides_and_every_delta(self) -> None:
        # Efficiency path: 100 × (0.30/8 − 0.10/8) = +2.5 pp; throughput 1000 → 3000 = +200%;
        # TTFT p99 1.0 → 1.1 = +10% (no veto).
        before = Summary(0.10, 8.0, 1000.0, 1.0)
        after = Summary(0.30, 8.0, 3000.0, 1.1)
        d = compare(before, after)
        assert d.before is before and d.after is after
        assert d.throughput_delta_pct == pytest.approx(200.0)
        assert d.vetoed is False
        worse = compare(after, before)  # −2.5 pp: plateau, not vetoed (nothing to veto)
        assert (worse.direction, worse.vetoed, worse.before, worse.after) == (
            "plateau", False, after, before)  # fmt: skip

    def test_throughput_and_no_signal_records(self) -> None:
        before, after = Summary(None, 4.0, 1000.0, 1.0), Summary(None, 4.0, 1200.0, 0.5)
        d = compare(before, after)  # +20% throughput; TTFT −50%
        assert (d.direction, d.signal, d.before, d.after) == ("better", "throughput", before, after)
        assert d.efficiency_delta_pp is None and d.ttft_p99_delta_pct == pytest.approx(-50.0)
        nothing_b, nothing_a = Summary(ttft_p99=2.0), Summary(ttft_p99=3.0)
        n = compare(nothing_b, nothing_a)
        assert (n.direction, n.signal, n.before, n.after) == ("plateau", "none", nothing_b,
                                                              nothing_a)  # fmt: skip
        assert n.throughput_delta_pct is None and n.ttft_p99_delta_pct == pytest.approx(50.0)

    def test_efficiency_on_one_side_only_falls_back_to_throughput(self) -> None:
        # The catalog matched before the change but not after (or the reverse): per-request
        # efficiency cannot be compared, throughput can: 1000 → 1200 = +20%.
        one = compare(Summary(0.2, 4.0, 1000.0), Summary(None, 4.0, 1200.0))
        other = compare(Summary(None, 4.0, 1000.0), Summary(0.2, 4.0, 1200.0))
        assert (one.signal, one.direction) == (other.signal, other.direction) == (
            "throughput", "better")  # fmt: skip
        # Zero running requests on a side: no per-request efficiency either.
        assert compare(Summary(0.2, 0.0, 1000.0), Summary(0.3, 4.0, 1200.0)).signal == "throughput"

    def test_percent_change_needs_a_positive_before(self) -> None:
        # Throughput 0 → 500: no percentage of zero; TTFT absent after: no TTFT delta.
        d = compare(Summary(None, 4.0, 0.0, 1.0), Summary(None, 4.0, 500.0, None))
        assert d.throughput_delta_pct is None and d.signal == "none"
        assert d.ttft_p99_delta_pct is None
        d2 = compare(Summary(None, 4.0, None, None), Summary(None, 4.0, 500.0, 1.0))
        assert d2.throughput_delta_pct is None and d2.ttft_p99_delta_pct is None


class TestR4:
    def test_oom_risk_is_a_configuration_fact(self) -> None:
        # Llama 3 70B in bf16 on one H100 SXM: 140e9 B of weights vs 85.5e9 × 0.9 usable.
        catalog = load_catalog(load_config({}, {}, {}))
        agg = Aggregate(
            model_name="meta-llama/Llama-3.1-70B-Instruct",
            serving=serving_config({"gpu_memory_utilization": "0.9"}),
            gpus=(GpuAggregate(0, "GPU-0", H100_NAME, mem_total_bytes=H100_MEMORY),),
        )  # fmt: skip
        one = assess(agg, RooflineSettings(catalog=catalog))
        # No traffic at all (zero evaluable windows): R4 still fires, score 1.0, memory primary.
        d = diagnose([], agg, one, 8.0)
        r4 = next(s for s in d.rules if s.rule == "R4")
        assert r4.significant and r4.score == 1.0
        assert d.groups[0].group == "memory" and d.groups[0].primary.rule == "R4"
        # 140e9 / 1 = 140.0 GB per GPU; headroom 85.52e9 × 0.9 − 140e9 = −63.0 GB.
        assert r4.evidence == "weights need 140.0 GB per GPU (bf16, TP 1); KV headroom -63.0 GB"
        assert r4.fix_code == "raise_tensor_parallel_size"
        assert r4.fix == (
            "Raise --tensor-parallel-size, or use a lower-precision weight format (e.g. fp8)."
        )
        # TP 4: 35 GB per GPU fits, R4 is quiet.
        four = assess(agg, RooflineSettings(catalog=catalog, tp=4))
        assert not next(
            s for s in diagnose([], agg, four, 8.0).rules if s.rule == "R4"
        ).fired_windows


class TestEpochs:
    def run(self, p: Any, t0: float, n: int, rate: float, start_time: float, tok0: float) -> float:
        """n ticks at 250 ms from t0, generating ``rate`` tok/s from ``tok0`` tokens."""
        for i in range(n):
            t = t0 + i * 0.25
            p.add_tick(tick(vllm(t, running=2.0, generation_tokens=tok0 + rate * (t - t0),
                                 process_start_time=start_time)))  # fmt: skip
        return t0 + n * 0.25

    def test_a_restart_compares_full_horizons(self) -> None:
        # 4 s horizon = 2 windows. Epoch 0 at 400 tok/s, then vLLM restarts (new start time,
        # counters from 0) and runs at 200 tok/s: throughput −50% → worse (no catalog match,
        # so throughput is the signal).
        p = Pipeline(horizon_seconds=4.0, poll_interval=0.25)
        t = self.run(p, 1000.0, 33, 400.0, start_time=900.0, tok0=0.0)
        assert p.snapshot.epoch == 0 and p.snapshot.direction is None
        t1 = self.run(p, t, 12, 200.0, start_time=1008.0, tok0=0.0)
        assert p.snapshot.epoch == 1
        assert p.snapshot.direction is None  # the new epoch has no full horizon yet
        self.run(p, t1, 24, 200.0, start_time=1008.0, tok0=200.0 * (t1 - t))
        assert p.snapshot.epoch == 1
        d = p.snapshot.direction
        assert d is not None and (d.direction, d.signal) == ("worse", "throughput")
        assert d.throughput_delta_pct == pytest.approx(-50.0)

    def test_cache_config_change_is_an_epoch(self) -> None:
        p = Pipeline(horizon_seconds=4.0, poll_interval=0.25)
        p.add_tick(tick(vllm(0.0, serving=serving_config({"block_size": "16"}))))
        p.add_tick(tick(vllm(0.25, serving=serving_config({"block_size": "16"}))))
        assert p.snapshot.epoch == 0
        p.add_tick(tick(vllm(0.5, serving=serving_config({"block_size": "32"}))))
        assert p.snapshot.epoch == 1


class TestFixAndEvidence:
    """What diagnose and issue_info show for each rule, worked from the aggregate by hand."""

    AGG = Aggregate(running=2.0, waiting=1.5, kv_usage_peak=0.97, kv_usage_mean=0.8,
                    preemptions_per_second=0.25, prefix_hit_ratio=0.004,
                    prompt_tokens_mean=120.0, requests_per_second=6.0)  # fmt: skip

    def status(self, key: Any, agg: Aggregate | None = None, mns: float | None = 8.0) -> Any:
        windows = [{key: RuleResult(True)}, {key: RuleResult(False)}] if key != R4 else []
        d = diagnose(windows, agg or self.AGG, None, mns)
        return next(s for s in d.rules if s.key == key)

    def test_r1(self) -> None:
        s = self.status(R1)  # 2 running of 8: 25%
        assert s.fix == "Raise client concurrency (more parallel requests): the scheduler has room."
        assert s.evidence == "occupancy 25% of --max-num-seqs 8, 1.5 waiting, in 1 of 2 windows"
        unknown = self.status(R1, Aggregate(), mns=None)
        assert unknown.evidence == "occupancy ? of --max-num-seqs ?, ? waiting, in 1 of 2 windows"

    def test_r2_paths(self) -> None:
        main = self.status(R2_MAIN)
        assert main.fix == "Reduce --max-num-seqs or --max-model-len."
        assert main.evidence == "KV peak 97% (mean 80%) in 1 of 2 windows; 0.25 preemptions/s"
        quiet = self.status(R2_MAIN, replace(self.AGG, preemptions_per_second=0.0))
        assert quiet.evidence == "KV peak 97% (mean 80%) in 1 of 2 windows"
        backlog = self.status(R2_BACKLOG)
        assert backlog.fix == (
            "Expand the KV pool: raise --gpu-memory-utilization if VRAM headroom exists; switch "
            "to an fp8 KV cache (--kv-cache-dtype fp8); or reduce --max-model-len.")  # fmt: skip
        assert backlog.evidence == ("requests queue for KV memory before it fills: 1.5 waiting, "
                                    "KV mean 80%, in 1 of 2 windows")  # fmt: skip

    def test_r3_with_prefix_caching_on_and_off(self) -> None:
        on = self.status(R3)  # a hit rate of 0.4% shows one decimal, not "0%"
        assert on.fix == ("Move shared instructions to the start of prompts, standardize "
                          "templates, and avoid unique tokens at the beginning.")  # fmt: skip
        assert on.evidence == "hit rate 0.4%, 120 prompt tokens, 6.0 req/s, in 1 of 2 windows"
        off = self.status(
            R3, replace(self.AGG, serving=serving_config({"enable_prefix_caching": "False"}))
        )
        assert (
            off.fix == "Enable --enable-prefix-caching, then restructure prompts to share a prefix."
        )
        assert off.evidence == ("prefix caching disabled, 120 prompt tokens, 6.0 req/s, in 1 of "
                                "2 windows")  # fmt: skip

    def test_r2_cause_quotes_the_vram_peak(self) -> None:
        # The fullest GPU's peak memory over its total: quoted from 78% (it corroborates).
        def gpus(*peaks: float) -> Aggregate:
            return replace(self.AGG, gpus=tuple(
                GpuAggregate(index=i, uuid=f"GPU-{i}", name=None, mem_used_peak_bytes=p * 100e9,
                             mem_total_bytes=100e9) for i, p in enumerate(peaks)))  # fmt: skip

        assert self.status(R2_MAIN, gpus(0.5, 0.9)).evidence.endswith(
            "0.25 preemptions/s; VRAM peak 90%")  # fmt: skip
        assert self.status(R2_MAIN, gpus(0.78)).evidence.endswith("; VRAM peak 78%")
        assert "VRAM" not in self.status(R2_MAIN, gpus(0.77)).evidence

    def test_fix_codes(self) -> None:
        # The exported fix is a fixed code per decision: the numbers never reach the label.
        codes = {k: self.status(k).fix_code for k in (R1, R2_MAIN, R2_BACKLOG, R3, R4)}
        assert codes == {R1: "raise_client_concurrency",
                         R2_MAIN: "reduce_max_num_seqs_or_max_model_len",
                         R2_BACKLOG: "expand_kv_pool", R3: "share_prompt_prefix",
                         R4: "raise_tensor_parallel_size"}  # fmt: skip
        off = replace(self.AGG, serving=serving_config({"enable_prefix_caching": "False"}))
        assert self.status(R3, off).fix_code == "enable_prefix_caching"
        # R5: a KV peak below 80% leaves room to raise the cap; at 80% it does not. The code
        # stays the same whatever the peak on either side; only the text quotes it.
        for peak, code in ((0.001, "raise_max_num_seqs"), (0.79, "raise_max_num_seqs"),
                           (0.80, "add_replica_or_lower_max_model_len"),
                           (None, "add_replica_or_lower_max_model_len")):  # fmt: skip
            s = self.status(R5, replace(self.AGG, kv_usage_peak=peak))
            assert s.fix_code == code, peak
            assert s.fix.startswith("Raise --max-num-seqs" if code == "raise_max_num_seqs"
                                    else "Add a replica")  # fmt: skip
        assert self.status(R5, replace(self.AGG, kv_usage_peak=0.001)).fix == (
            "Raise --max-num-seqs (KV peak 0.1% leaves room).")  # fmt: skip

    def test_percentages_at_their_edges(self) -> None:
        # 0 is "0%", 1% exactly is "1%", below 1% one decimal.
        s = self.status(R2_BACKLOG, replace(self.AGG, kv_usage_mean=0.0))
        assert "KV mean 0%," in s.evidence
        assert (
            "KV mean 1%," in self.status(R2_BACKLOG, replace(self.AGG, kv_usage_mean=0.01)).evidence
        )
        assert (
            "KV mean 0.9%,"
            in self.status(R2_BACKLOG, replace(self.AGG, kv_usage_mean=0.009)).evidence
        )

    def test_r4_with_the_catalog(self) -> None:
        # 140e9 B of weights over TP 4 = 35.0 GB per GPU; the worst GPU's KV headroom, −1.5 GB
        # (exactly 0 is not below zero).
        def r4(headrooms: tuple[float, ...], tp: int = 4, pp: int = 1,
               consistent: bool = True) -> Any:  # fmt: skip
            a = SimpleNamespace(
                roofline=SimpleNamespace(weight_bytes=140e9,
                                         kv_headroom_bytes=tuple((None, h) for h in headrooms)),
                resolved=SimpleNamespace(inputs=SimpleNamespace(tp=tp, pp=pp), dtype="bf16",
                                         parallelism=SimpleNamespace(consistent=consistent)),
            )  # fmt: skip
            d = diagnose([], self.AGG, a, 8.0)  # type: ignore[arg-type]
            return next(x for x in d.rules if x.key == R4)

        firing = r4((2e9, -1.5e9))
        assert firing.evidence == "weights need 35.0 GB per GPU (bf16, TP 4); KV headroom -1.5 GB"
        assert firing.latest == RuleResult(True, "KV headroom below zero") and firing.significant
        assert (firing.name, firing.fired_windows, firing.evaluable_windows, firing.score) == (
            "OOM Risk", 1, 0, 1.0)  # fmt: skip
        edge = r4((0.0,))
        assert edge.latest == RuleResult(False, "not triggered") and not edge.significant
        assert (edge.fired_windows, edge.score) == (0, 0.0)
        assert edge.evidence.endswith("KV headroom 0.0 GB")
        # 140e9 B over TP 2 x PP 2 = 35.0 GB per GPU too; the split is said as such.
        staged = r4((2e9, -1.5e9), tp=2, pp=2)
        assert staged.evidence == (
            "weights need 35.0 GB per GPU (bf16, TP 2 x PP 2); KV headroom -1.5 GB"
        )
        # A split that contradicts the GPUs seen: skipped with its reason, never a page.
        mismatch = r4((-1.5e9,), consistent=False)
        assert mismatch.latest is not None and mismatch.latest.skipped == "parallelism_mismatch"
        assert not mismatch.latest.fired and not mismatch.significant
        none = r4(())
        needs = "needs the GPU and the model in the catalog, and GPU memory data"
        assert none.latest == RuleResult(False, needs, skipped="not_in_catalog")
        assert none.evidence.endswith("KV headroom ? GB")

    def test_r4_without_the_catalog(self) -> None:
        s = self.status(R4)
        assert s.fix == ("Raise --tensor-parallel-size, or use a lower-precision weight format "
                         "(e.g. fp8).")  # fmt: skip
        assert s.evidence == "needs the GPU and the model in the catalog"

    def test_r5_fix_follows_the_kv_peak(self) -> None:
        unsafe = self.status(R5)  # KV peak 97%
        assert unsafe.fix == ("Add a replica or lower --max-model-len: raising --max-num-seqs at "
                              "KV peak 97% would cause thrashing.")  # fmt: skip
        assert (
            unsafe.evidence
            == "running 2.0 at the cap --max-num-seqs 8, 1.5 waiting, in 1 of 2 windows"
        )
        safe = self.status(R5, replace(self.AGG, kv_usage_peak=0.5))
        assert safe.fix == "Raise --max-num-seqs (KV peak 50% leaves room)."

    def test_statuses_carry_the_latest_window_and_the_counts(self) -> None:
        windows = [{R1: RuleResult(True, "a")}, {R1: RuleResult(False, "b")}]
        s = next(x for x in diagnose(windows, self.AGG, None, 8.0).rules if x.key == R1)
        assert (s.name, s.latest, s.evaluable_windows, s.score) == (
            "Under-batching", RuleResult(False, "b"), 2, 0.5)  # fmt: skip
        empty = next(x for x in diagnose([], self.AGG, None, 8.0).rules if x.key == R1)
        assert (empty.latest, empty.score, empty.evaluable_windows) == (None, 0.0, 0)

    @pytest.mark.parametrize(
        ("fired", "evaluable", "significant"),
        [(3, 12, True), (3, 13, False), (2, 4, False), (3, 3, True)],
    )
    def test_persistence(self, fired: int, evaluable: int, significant: bool) -> None:
        # Significant: fired in ≥ 3 windows and ≥ 25% of the evaluable ones (3/12 = 25% is
        # enough, 3/13 = 23% is not).
        windows = [{R1: RuleResult(i < fired)} for i in range(evaluable)]
        s = next(x for x in diagnose(windows, self.AGG, None, 8.0).rules if x.key == R1)
        assert (s.fired_windows, s.significant) == (fired, significant)


class TestRegistry:
    """Each rule is one entry of rules.RULES; everything else is derived from it."""

    def test_every_rule_is_whole(self) -> None:
        docs = (Path(__file__).resolve().parent.parent / "docs" / "rules.md").read_text()
        for r in RULES:
            # One condition: per window, or a configuration fact.
            assert (r.window is None) != (r.fact is None), r.key
            assert f'<a id="{r.anchor}"></a>' in docs, r.anchor
            advice = r.advice(Horizon(1, 2, Aggregate(), None, None))
            assert advice.fix_code in FIXES and advice.fix and advice.evidence, r.key
        assert {r.group for r in RULES} == {"memory", "scheduling", "cache_reuse"}

    def test_each_rule_advises_its_own_fix(self) -> None:
        # No rule falls through to another's advice: every rule's fix codes are its own.
        own = {R1: {"raise_client_concurrency"},
               R2_MAIN: {"reduce_max_num_seqs_or_max_model_len"}, R2_BACKLOG: {"expand_kv_pool"},
               R3: {"share_prompt_prefix", "enable_prefix_caching"},
               R4: {"raise_tensor_parallel_size"},
               R5: {"raise_max_num_seqs", "add_replica_or_lower_max_model_len"}}  # fmt: skip
        for r in RULES:
            for agg in (
                Aggregate(),
                Aggregate(
                    kv_usage_peak=0.1, serving=serving_config({"enable_prefix_caching": "False"})
                ),
            ):
                assert r.advice(Horizon(1, 2, agg, None, 8.0)).fix_code in own[r.key], r.key
        assert set().union(*own.values()) == set(FIXES)

    def test_tie_order_and_groups_come_from_the_registry(self) -> None:
        assert [r.key for r in RULES] == [R4, R2_MAIN, R2_BACKLOG, R5, R1, R3]
        assert ALL_RULES == (R1, R2_MAIN, R2_BACKLOG, R3, R4, R5)
        assert {k: BY_KEY[k].name for k in ALL_RULES} == {
            R1: "Under-batching", R2_MAIN: "KV Cache Pressure", R2_BACKLOG: "KV Cache Pressure",
            R3: "Low Prefix Reuse", R4: "OOM Risk", R5: "Concurrency Saturation"}  # fmt: skip
