"""Property-based fuzzing of everything that reads outside input: the vLLM parser, the
dcgm-exporter parser and the recording reader. Bounded (a few hundred cases each) so CI runs it.

The property: bad input ends in the documented error (ParseError, RecordingError) or a valid
sample — never another exception, never a negative or non-finite value in a sample.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.engines.vllm.parse import parse_vllm_metrics
from exporter.recording import RecordingError, gpu_sample_from_entry, read_entries
from exporter.samples import PLAUSIBLE, EngineSample, GpuSample, Histogram
from exporter.scrape.dcgm import DcgmSelector, parse_dcgm_metrics
from exporter.scrape.replay import engine_result
from exporter.scrape.text_format import ParseError
from tests.paths import FIX

with gzip.open(FIX / "vllm" / "vllm032-cpu-c-saturation.jsonl.gz", "rt") as _f:
    BODY = [e for e in map(json.loads, _f) if "body" in e][60]["body"]
LINES = BODY.splitlines()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = st.sampled_from(
    ["vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm_generation_tokens_total",
     "vllm:time_to_first_token_seconds_bucket", "vllm:time_to_first_token_seconds_sum",
     "vllm:time_to_first_token_seconds_count", "vllm:cache_config_info",
     "process_start_time_seconds", "vllm:request_success_total", "other_metric"]
)  # fmt: skip
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["NaN", "+Inf", "-Inf", "1e308", "-0", "", "abc", "1 2 3"]),
    st.integers(-10, 10**12).map(str),
)
LABELS = st.lists(
    st.tuples(st.sampled_from(["engine", "le", "model_name", "finished_reason", "x"]),
              st.text(max_size=8)),
    max_size=4,
).map(lambda kv: ",".join(f'{k}="{json.dumps(v)[1:-1]}"' for k, v in kv))  # fmt: skip
LINE = st.one_of(
    st.builds(lambda n, lab, v: f"{n}{{{lab}}} {v}", NAMES, LABELS, VALUES),
    st.builds(lambda n, v: f"{n} {v}", NAMES, VALUES),
    st.text(max_size=60),
    st.sampled_from(LINES),
)


def check_sample(s: EngineSample) -> None:
    for f in fields(s):
        v = getattr(s, f.name)
        if isinstance(v, float):
            assert math.isfinite(v) and v >= 0, f.name
        if isinstance(v, Histogram):
            assert v.bounds[-1] == math.inf and not any(math.isnan(b) for b in v.bounds)
            assert list(v.cumulative) == sorted(v.cumulative)
            assert all(math.isfinite(c) and c >= 0 for c in v.cumulative)


@FUZZ
@given(st.lists(LINE, max_size=30), st.booleans())
def test_vllm_parser_on_generated_bodies(lines: list[str], newline: bool) -> None:
    body = "\n".join(lines) + ("\n" if newline else "")
    try:
        s = parse_vllm_metrics(body, 1.0)
    except ParseError:
        return
    check_sample(s)


@FUZZ
@given(st.data())
def test_vllm_parser_on_mutated_real_bodies(data: st.DataObject) -> None:
    raw = bytearray(BODY.encode())
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "dup", "insert"]))
        if op == "flip":
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[i : i + data.draw(st.integers(1, 400))]
        elif op == "dup":
            raw[i:i] = raw[i : i + data.draw(st.integers(1, 400))]
        else:
            raw[i:i] = data.draw(st.binary(max_size=20))
    body = raw.decode("utf-8", errors="replace")
    try:
        s = parse_vllm_metrics(body, 1.0)
    except ParseError:
        return
    check_sample(s)
    # The same text through the replay path gives a sample or a PollError, never an exception.
    engine_result({"t": 1.0, "source": "vllm", "body": body}, 1.0)


@FUZZ
@given(st.lists(LINE, max_size=20))
def test_dcgm_parser(lines: list[str]) -> None:
    body = "\n".join(x.replace("vllm", "DCGM_FI_DEV_POWER_USAGE") for x in lines)
    try:
        parse_dcgm_metrics(body, 1.0, DcgmSelector())
    except ParseError:
        pass


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)
ENTRY = st.fixed_dictionaries(
    {},
    optional={"t": JSON | st.floats(0, 2e9),
              "source": st.sampled_from(["vllm", "nvml", "dcgm", "x"]) | JSON,
              "body": JSON | st.sampled_from(LINES), "error": JSON, "gpus": JSON,
              "recording": JSON},
)  # fmt: skip


@FUZZ
@given(st.lists(st.one_of(ENTRY.map(json.dumps), st.text(max_size=40)), max_size=10))
def test_recording_reader(tmp_path_factory: pytest.TempPathFactory, lines: list[str]) -> None:
    path = tmp_path_factory.mktemp("rec") / "r.jsonl"
    path.write_text("\n".join(lines) + "\n")
    try:
        for e in read_entries(path):
            assert math.isfinite(e["t"]) and e["t"] >= 0
            if e["source"] in ("nvml", "dcgm"):
                g = gpu_sample_from_entry(e, 1.0)
                if isinstance(g, GpuSample):
                    check_gpu_sample(g)
            elif e["source"] == "vllm":
                v = engine_result(e, 1.0)
                if isinstance(v, EngineSample):
                    check_sample(v)
    except RecordingError:
        pass


def check_gpu_sample(s: GpuSample) -> None:
    for r in s.gpus:
        for name, (low, high) in PLAUSIBLE.items():
            v = getattr(r, name)
            assert v is None or (math.isfinite(v) and low <= v <= high), (name, v)


@FUZZ
@given(
    st.lists(
        st.fixed_dictionaries(
            {"index": st.integers(0, 7)},
            optional={
                k: st.one_of(st.floats(allow_nan=False), st.integers(-(2**64), 2**64))
                for k in (
                    "util_gpu",
                    "util_mem",
                    "power_mw",
                    "mem_used_bytes",
                    "mem_total_bytes",
                    "temperature_c",
                    "sm_clock_mhz",
                    "energy_mj",
                )
            },
        ),
        max_size=3,
    )
)
def test_gpu_readings_from_recordings_are_plausible_or_absent(
    gpus: list[dict[str, object]],
) -> None:
    try:
        g = gpu_sample_from_entry({"t": 1.0, "source": "nvml", "gpus": gpus}, 1.0)
    except RecordingError:
        return  # a negative or non-numeric value: the documented error
    assert isinstance(g, GpuSample)
    check_gpu_sample(g)
