"""Tensor, pipeline and data parallelism: what the exporter derives from the GPUs it sees, what a
declaration says, and what happens when the two disagree (no ceiling, no OOM page).

Every expected figure is worked by hand here from the catalog's H100 SXM entry (989.4 TFLOP/s
dense BF16, 3,350 GB/s) and Llama 3 70B (70e9 parameters, bf16: 2 bytes each).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from exporter.app import load_catalog
from exporter.config import ConfigError, load_config
from exporter.derive.assess import assess
from exporter.derive.horizon import Aggregate, GpuAggregate
from exporter.derive.resolve import Parallelism, RooflineSettings, resolve_parallelism
from exporter.derive.rules import R4, RULES
from exporter.engines.vllm.serving import serving_config
from tests.helpers import H100_MEMORY, H100_NAME
from tests.paths import H100, UNDERBATCH
from tests.recordings import gpu_recording
from tests.test_replay_cli import run_replay, samples

CATALOG = load_catalog(load_config({}, {}, {}))
GB = 1e9


def settings(**kw: object) -> RooflineSettings:
    return RooflineSettings(catalog=CATALOG, **kw)  # type: ignore[arg-type]


def serving(gpus: int, engines: int = 1, batch: float = 32.0, tps: float = 2000.0) -> Aggregate:
    """A 70B model served on ``gpus`` H100s of 80 GB each (vLLM said 0.9 of their memory)."""
    return Aggregate(
        model_name="meta-llama/Meta-Llama-3-70B-Instruct",
        model_names=("meta-llama/Meta-Llama-3-70B-Instruct",),
        serving=serving_config({"gpu_memory_utilization": "0.9"}),
        engines=engines,
        running_active=batch,
        generation_tps=tps,
        gpus=tuple(
            GpuAggregate(i, f"GPU-{i}", H100_NAME, mem_total_bytes=80 * GB) for i in range(gpus)
        ),
    )


def r4(a: object) -> object:
    fact = next(r.fact for r in RULES if r.key == R4)
    assert fact is not None
    return fact(a)  # type: ignore[arg-type]


def test_tp4_derived_from_four_gpus_with_a_70b_model() -> None:
    a = assess(serving(4), settings())
    par = a.resolved.parallelism
    assert (par.tp, par.tp_source, par.pp, par.dp, par.consistent) == (4, "gpus", 1, 1, True)
    r = a.roofline
    # hardware = 989.4e12 x 4 / (2 x 70e9) = 28,268.571 tok/s (TP 1 would say 7,067: 4x low)
    assert r.hardware_tps == pytest.approx(989.4e12 * 4 / 140e9, rel=1e-12)
    # one stream = 3.35e12 x 4 / (70e9 x 2) = 95.714 tok/s
    assert r.stream_tps == pytest.approx(3.35e12 * 4 / 140e9, rel=1e-12)
    assert r.efficiency == pytest.approx(2000 / (989.4e12 * 4 / 140e9), rel=1e-12)  # 7.1%, not 28%
    # TPOT floor: max(140e9 / (3.35e12 x 4), 32 x 140e9 / (989.4e12 x 4)) = 10.448 ms
    assert r.tpot_floor_seconds == pytest.approx(140e9 / 13.4e12, rel=1e-9)
    # KV headroom per GPU: 80 GB x 0.9 - 140 GB / 4 = 37 GB: no OOM risk
    assert [kv for _, kv in r.kv_headroom_bytes] == [pytest.approx(37 * GB)] * 4
    assert not r4(a).fired and r4(a).skipped is None  # type: ignore[attr-defined]


def test_eight_gpus_two_engines_are_tp4_each() -> None:
    a = assess(serving(8, engines=2, batch=64, tps=4000), settings())
    par = a.resolved.parallelism
    assert (par.tp, par.tp_source, par.dp) == (4, "gpus", 2)
    # two engines of TP 4: 2 x 28,268.571 tok/s; one stream is one engine's: 95.714
    assert a.roofline.hardware_tps == pytest.approx(2 * 989.4e12 * 4 / 140e9, rel=1e-12)
    assert a.roofline.stream_tps == pytest.approx(3.35e12 * 4 / 140e9, rel=1e-12)
    assert a.roofline.efficiency == pytest.approx(4000 / (989.4e12 * 8 / 140e9), rel=1e-12)


@pytest.mark.parametrize(
    ("gpus", "engines", "declared"),
    [(4, 1, 2), (4, 1, 8), (8, 2, 8), (3, 2, None), (6, 4, None)],
)
def test_a_split_that_contradicts_the_gpus_withholds_the_roofline_and_r4(
    gpus: int, engines: int, declared: int | None
) -> None:
    s = settings() if declared is None else settings(tp=declared, tp_source="flag")
    a = assess(serving(gpus, engines), s)
    assert not a.resolved.parallelism.consistent
    assert "parallelism_mismatch" in a.reasons
    r = a.roofline
    assert (r.hardware_tps, r.stream_tps, r.efficiency, r.tpot_floor_seconds) == (None,) * 4
    assert r.kv_headroom_bytes == ()
    result = r4(a)
    assert result.skipped == "parallelism_mismatch" and not result.fired  # type: ignore[attr-defined]
    # Economics without a ceiling: no recoverable cost either (it needs the efficiency).
    assert a.economics.recoverable_per_hour is None
    assert a.economics.wall_recoverable_per_hour is None


def test_a_declared_tp_that_matches_is_kept_with_its_source() -> None:
    a = assess(serving(4), settings(tp=4, tp_source="env"))
    assert (a.resolved.parallelism.tp_source, a.resolved.parallelism.consistent) == ("env", True)


def test_no_gpu_seen_keeps_the_declared_tp_and_no_roofline() -> None:
    a = assess(serving(0), settings(tp=4, tp_source="flag"))
    assert (a.resolved.inputs.tp, a.resolved.parallelism.consistent) == (4, True)
    assert "no_gpu_data" in a.reasons and "parallelism_mismatch" not in a.reasons
    bare = assess(serving(0), settings())
    assert (bare.resolved.parallelism.tp, bare.resolved.parallelism.tp_source) == (1, "default")


def test_pipeline_parallel_is_modelled() -> None:
    # 8 GPUs: PP 2 stages of TP 4. The compute ceiling counts all 8 GPUs once the pipeline is
    # full: 989.4e12 x 8 / 140e9 = 56,537.14 tok/s; one stream crosses the stages in turn at a
    # stage's TP 4 bandwidth: 95.714 tok/s; each GPU holds 140 GB / 8 = 17.5 GB of weights.
    a = assess(serving(8), settings(pp=2, pp_source="flag"))
    par = a.resolved.parallelism
    assert (par.tp, par.pp, par.consistent) == (4, 2, True)
    r = a.roofline
    assert r.hardware_tps == pytest.approx(989.4e12 * 8 / 140e9, rel=1e-12)
    assert r.stream_tps == pytest.approx(3.35e12 * 4 / 140e9, rel=1e-12)
    assert [kv for _, kv in r.kv_headroom_bytes] == [pytest.approx(72 * GB - 17.5 * GB)] * 8
    # TPOT floor: max(140e9 / (3.35e12 x 4), 32 x 140e9 / (989.4e12 x 8)) = the memory term
    assert r.tpot_floor_seconds == pytest.approx(140e9 / 13.4e12, rel=1e-9)
    # PP 2 declared with 6 GPUs: 6 / 2 = TP 3, consistent; with 5 GPUs it is not.
    assert assess(serving(6), settings(pp=2, pp_source="env")).resolved.inputs.tp == 3
    assert not assess(serving(5), settings(pp=2)).resolved.parallelism.consistent


def test_tp1_on_one_80gb_gpu_is_still_an_oom_risk() -> None:
    # The rule still fires where it should: 72 GB usable - 140 GB of weights < 0.
    a = assess(serving(1), settings())
    assert a.resolved.parallelism.tp == 1 and r4(a).fired  # type: ignore[attr-defined]


def test_config_declarations_and_their_sources() -> None:
    bare = load_config({}, {}, {})
    assert (bare.tp, bare.tp_source, bare.pp, bare.pp_source) == (None, "", 1, "default")
    env = load_config({}, {"VLLM_TENSOR_PARALLEL_SIZE": "4", "PIPELINE_PARALLEL_SIZE": "2"}, {})
    assert (env.tp, env.tp_source, env.pp, env.pp_source) == (4, "env", 2, "env")
    flag = load_config({"pipeline_parallel_size": "3"}, {"VLLM_PIPELINE_PARALLEL_SIZE": "2"}, {})
    assert (flag.pp, flag.pp_source) == (3, "flag")
    with pytest.raises(ConfigError, match="VLLM_PIPELINE_PARALLEL_SIZE"):
        load_config({}, {"VLLM_PIPELINE_PARALLEL_SIZE": "two"}, {})


def _renamed(src: Path, dst: Path, model: str) -> None:
    with gzip.open(src, "rt") as f, gzip.open(dst, "wt") as out:
        for line in f:
            e = json.loads(line)
            if isinstance(e.get("body"), str):
                e["body"] = e["body"].replace('model_name="tiny-llama"', f'model_name="{model}"')
            out.write(json.dumps(e) + "\n")


def test_four_recorded_h100s_serving_a_70b_model_end_to_end(tmp_path: Path) -> None:
    """Real H100 readings as four GPUs, a real vLLM recording under a 70B model's name, through
    the unchanged pipeline and collector."""
    gpus, vllm = tmp_path / "gpus.jsonl.gz", tmp_path / "vllm.jsonl.gz"
    gpu_recording(gpus, 4, probe=H100, seconds=120)
    _renamed(UNDERBATCH, vllm, "meta-llama/Llama-3.3-70B-Instruct")
    m = samples(run_replay(str(vllm), "--gpu-replay", str(gpus), "--max-num-seqs", "64"))
    info = dict(next(k for k in m if k[0] == "vllm_profile_info")[1])
    assert (info["tensor_parallel_size"], info["tensor_parallel_size_source"]) == ("4", "gpus")
    assert (info["pipeline_parallel_size"], info["pipeline_parallel_size_source"]) == (
        "1",
        "default",
    )
    assert m[("vllm_profile_decode_hardware_ceiling_tokens_per_second", ())] == pytest.approx(
        989.4e12 * 4 / 140e9, rel=1e-12
    )
    # The probe's H100: 85,520,809,984 bytes; vLLM said gpu_memory_utilization 0.92.
    kv = [v for (n, _), v in m.items() if n == "vllm_profile_kv_headroom_bytes"]
    assert kv == [pytest.approx(H100_MEMORY * 0.92 - 35e9)] * 4
    r4_key = (("name", "OOM Risk"), ("rule", "R4"), ("variant", ""))
    assert m[("vllm_profile_rule_significant", r4_key)] == 0
    # Declared TP 2 on the same four GPUs: withheld, with the reason, and R4 skipped.
    bad = samples(run_replay(str(vllm), "--gpu-replay", str(gpus), "--tensor-parallel-size", "2"))
    assert bad[("vllm_profile_roofline_unavailable", (("reason", "parallelism_mismatch"),))] == 1
    assert not [n for n, _ in bad if n == "vllm_profile_decode_hardware_ceiling_tokens_per_second"]
    assert not [n for n, _ in bad if n == "vllm_profile_kv_headroom_bytes"]
    skipped = (("name", "OOM Risk"), ("reason", "parallelism_mismatch"), ("rule", "R4"))
    assert bad[("vllm_profile_rule_skipped", skipped)] == 1


@pytest.mark.parametrize(
    ("settings", "gpus", "engines", "expected"),
    [
        # Declared TP: taken; consistent when TP x PP x DP is the GPUs seen (or none is seen).
        (RooflineSettings(tp=2, tp_source="flag"), 4, 2,
         Parallelism(2, "flag", 1, "default", 2, 4)),
        (RooflineSettings(tp=2, tp_source="env", pp=2, pp_source="flag"), 4, 1,
         Parallelism(2, "env", 2, "flag", 1, 4)),
        (RooflineSettings(tp=2, tp_source="flag"), 0, 1,
         Parallelism(2, "flag", 1, "default", 1, 0)),
        (RooflineSettings(tp=2, tp_source="flag"), 4, 1,
         Parallelism(2, "flag", 1, "default", 1, 4, consistent=False)),
        # Nothing declared: none seen is TP 1 by default; else the GPUs over PP x DP.
        (RooflineSettings(pp=2, pp_source="env"), 0, 3, Parallelism(1, "default", 2, "env", 3, 0)),
        (RooflineSettings(), 8, 2, Parallelism(4, "gpus", 1, "default", 2, 8)),
        # 6 GPUs cannot split over 4 engines: TP 1, said to contradict.
        (RooflineSettings(pp=1, pp_source="flag"), 6, 4,
         Parallelism(1, "gpus", 1, "flag", 4, 6, consistent=False)),
    ],
)  # fmt: skip
def test_the_split_by_hand(settings: RooflineSettings, gpus: int, engines: int,
                           expected: Parallelism) -> None:  # fmt: skip
    assert resolve_parallelism(settings, gpus=gpus, engines=engines) == expected
