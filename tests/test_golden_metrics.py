"""A golden ``/metrics`` per deployment shape, as node_exporter keeps one per collector: a change
to any family's name, HELP, type, labels or value shows as a diff against tests/golden/. Each is
a real vLLM recording replayed through the whole pipeline (``replay --print-metrics``);
``pytest --update-golden`` rewrites them, to be reviewed like code."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import cli_in_process
from tests.paths import H200, SATURATION, VLLM

GOLDEN = Path(__file__).parent / "golden"


def write(path: Path, entries: list[dict[str, object]]) -> Path:
    with gzip.open(path, "wt") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")
    return path


def data_parallel(tmp: Path) -> Path:
    """A real body of vLLM with --data-parallel-size 2 (two engines' series), polled every
    250 ms for 8 s: an idle DP server."""
    body = (VLLM / "vllm032-cpu-dp2-body.txt").read_text()
    t0 = 1795772798.0
    polls = [{"t": t0 + i * 0.25, "source": "vllm", "body": body} for i in range(33)]
    return write(tmp / "dp2.jsonl.gz", [{"recording": 1}, *polls])


def several_models(tmp: Path) -> Path:
    """The saturation recording with every series that names the model served twice, the twin
    under a second model name: one /metrics that mixes two models."""
    with gzip.open(SATURATION, "rt") as f:
        entries = [json.loads(line) for line in f]
    for e in entries:
        if "body" in e and e.get("source") == "vllm":
            lines = []
            for line in str(e["body"]).splitlines():
                lines.append(line)
                if 'model_name="tiny-llama"' in line:
                    lines.append(line.replace('model_name="tiny-llama"', 'model_name="tiny-b"'))
            e["body"] = "\n".join(lines) + "\n"
    return write(tmp / "two-models.jsonl.gz", entries)


def recorded(path: Path) -> Callable[[Path], Path]:
    return lambda _: path


SHAPES: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "metrics-no-gpu.prom": (recorded(SATURATION), ("--gpu-source", "none", "--max-num-seqs", "4")),
    "metrics-one-gpu.prom": (recorded(SATURATION), (
        "--gpu-replay", str(H200), "--max-num-seqs", "4", "--model-params", "425600",
        "--cost-per-hour", "3.5")),
    "metrics-data-parallel.prom": (data_parallel, ("--gpu-source", "none", "--max-num-seqs", "4")),
    "metrics-several-models.prom": (several_models, ("--gpu-source", "none",)),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SHAPES))
def test_metrics_match_golden(name: str, tmp_path: Path, update_golden: bool) -> None:
    make, args = SHAPES[name]
    text = cli_in_process("replay", str(make(tmp_path)), "--print-metrics", *args)
    golden = GOLDEN / name
    if update_golden:
        golden.write_text(text)
    assert text == golden.read_text()


def test_the_shapes_differ_where_they_should() -> None:
    """Each golden shows its shape (so a golden rewritten from a broken replay is noticed)."""
    read = {name: (GOLDEN / name).read_text() for name in SHAPES}
    assert 'source="nvml"' not in read["metrics-no-gpu.prom"]
    assert 'vllm_profile_up{source="nvml"} 1.0' in read["metrics-one-gpu.prom"]
    assert "vllm_profile_efficiency_ratio " in read["metrics-one-gpu.prom"]
    assert re.search(r"^vllm_profile_data_parallel_engines 2(\.0)?$",
                     read["metrics-data-parallel.prom"], flags=re.M)  # fmt: skip
    several = read["metrics-several-models.prom"]
    assert 'vllm_profile_roofline_unavailable{reason="several_models"} 1.0' in several
    assert 'model="tiny-b,tiny-llama"' in several  # both named, neither claimed
