"""The serving configuration's identity (vllm_profile_info{config_id}) and what a restart is:
a restart that kept its configuration is not a configuration change."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from tests.paths import FIX, RESTART
from tests.test_replay_cli import run_replay, samples

INFO = "vllm_profile_info"


def info(m: dict) -> dict[str, str]:
    return dict(next(k for k in m if k[0] == INFO)[1])


def cause(m: dict) -> str | None:
    causes = [dict(k[1])["cause"] for k in m if k[0] == "vllm_profile_config_epoch_info"]
    assert len(causes) <= 1
    return causes[0] if causes else None


def after_restart_changed(tmp: Path, old: str, new: str) -> Path:
    """The real restart recording with one cache setting changed in the restarted process's
    bodies: vLLM came back with another configuration."""
    out = tmp / "restart-changed.jsonl.gz"
    start = None
    with gzip.open(RESTART, "rt") as f, gzip.open(out, "wt") as dst:
        for line in f:
            e = json.loads(line)
            body = e.get("body")
            if isinstance(body, str):
                m = re.search(r"^process_start_time_seconds (\S+)$", body, re.M)
                start = start or (m.group(1) if m else None)
                if m and m.group(1) != start:
                    e["body"] = body.replace(old, new)
            dst.write(json.dumps(e) + "\n")
    return out


def test_a_crash_restart_that_kept_its_configuration_is_said_so() -> None:
    # The recording's vLLM restarts with the same flags: a new epoch (a before/after comparison
    # still runs), caused by a restart into the same configuration, and one identity throughout.
    m = samples(run_replay(str(RESTART), "--gpu-source", "none", "--max-num-seqs", "8"))
    assert m[("vllm_profile_config_epoch", ())] == 1
    assert cause(m) == "engine_restart_same_config"
    assert re.fullmatch(r"[0-9a-f]{12}", info(m)["config_id"])


def test_a_restart_into_another_configuration_is_a_change(tmp_path: Path) -> None:
    rec = after_restart_changed(tmp_path, 'gpu_memory_utilization="0.92"',
                                'gpu_memory_utilization="0.85"')  # fmt: skip
    m = samples(run_replay(str(rec), "--gpu-source", "none", "--max-num-seqs", "8"))
    assert m[("vllm_profile_config_epoch", ())] == 1
    assert cause(m) == "engine_restart"
    same = samples(run_replay(str(RESTART), "--gpu-source", "none", "--max-num-seqs", "8"))
    assert info(m)["config_id"] != info(same)["config_id"]


def test_the_identity_is_the_configuration_wherever_it_runs() -> None:
    # Two recordings of the same server under different loads: the same identity. What the
    # exporter is told (--max-num-seqs, TP) and the revision are part of it.
    def ident(rec: str, *flags: str) -> str:
        out = run_replay(str(FIX / "vllm" / rec), "--gpu-source", "none", *flags)
        return info(samples(out))["config_id"]

    busy = ident("vllm032-cpu-e1-prefix-shared.jsonl.gz", "--max-num-seqs", "8")
    assert busy == ident("vllm032-cpu-e2-prefix-unique.jsonl.gz", "--max-num-seqs", "8")
    assert busy != ident("vllm032-cpu-e1-prefix-shared.jsonl.gz", "--max-num-seqs", "16")
    assert busy != ident("vllm032-cpu-e1-prefix-shared.jsonl.gz", "--max-num-seqs", "8",
                         "--config-revision", "5d9c7f6b8")  # fmt: skip
    # Prefix caching off, or a KV pool forced to 12 blocks (--num-gpu-blocks-override), is
    # another configuration of the same model.
    assert busy != ident("vllm032-cpu-e3-prefix-disabled.jsonl.gz", "--max-num-seqs", "8")
    assert busy != ident("vllm032-cpu-d-kvpressure.jsonl.gz", "--max-num-seqs", "8")
