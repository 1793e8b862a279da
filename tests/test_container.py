"""The Containerfile cannot be built here (no container engine): check its invariants, and build
the wheel its first stage installs to prove the package (code and data) is complete."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from tests.paths import ROOT


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), a line ending in a backslash joined with the next."""
    text = (ROOT / "Containerfile").read_text().replace("\\\n", " ")
    lines = text.splitlines()
    return [
        (ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "")
        for ln in lines
        if ln.strip() and not ln.lstrip().startswith("#")
    ]


def test_runs_as_the_charts_non_root_user() -> None:
    ins = instructions()
    final = ins[max(i for i, (op, _) in enumerate(ins) if op == "FROM") :]
    users = [arg for op, arg in final if op == "USER"]
    assert users == ["65534:65534"]
    values = yaml.safe_load((ROOT / "deploy/helm/vllm-profile-exporter/values.yaml").read_text())
    ctx = values["podSecurityContext"]
    assert users[0] == f"{ctx['runAsUser']}:{ctx['runAsGroup']}"
    # Nothing runs as root in the final stage after the files are copied.
    assert not [op for op, _ in final if op == "RUN"]
    assert ("EXPOSE", str(values["port"])) in final
    assert ("ENTRYPOINT", '["vllm-profile-exporter"]') in final


def test_the_wheel_carries_code_and_data(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("vllm_profile_exporter-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "exporter/cli.py",
        "exporter/catalog/gpus.yaml",
        "exporter/catalog/models.yaml",
        "exporter/demo/demo-vllm-saturation.jsonl.gz",
        "exporter/demo/demo-gpu-h200.jsonl.gz",
    ):
        assert needed in names, needed
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "vllm-profile-exporter = exporter.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    )


def test_the_image_installs_what_was_tested_and_says_what_it_is() -> None:
    ins = instructions()
    build = ins[: max(i for i, (op, _) in enumerate(ins) if op == "FROM")]
    (install,) = [arg for op, arg in build if op == "RUN" and "pip install" in arg]
    assert "--constraint constraints.txt" in install
    assert any(op == "COPY" and "constraints.txt" in arg for op, arg in build)
    # The constraints are this (tested) environment's versions of every runtime dependency.
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "constraints"), "--check"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))  # fmt: skip
    assert {"aiohttp", "prometheus-client", "pyyaml", "bcrypt"} <= set(pins)
    # OCI labels: the version is the package's and the chart's.
    text = (ROOT / "Containerfile").read_text()
    from exporter import __version__

    assert f"ARG VERSION={__version__}" in text
    chart = yaml.safe_load((ROOT / "deploy/helm/vllm-profile-exporter/Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    for label in ("title", "version", "licenses", "source"):
        assert f"org.opencontainers.image.{label}=" in text
