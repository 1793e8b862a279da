"""The sidecar injected without pasting: deploy/kustomize/sidecar, applied by the real kustomize
(built into kubectl) to vLLM workloads, gives each annotated one the chart's own container."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from tests.paths import ROOT
from tests.test_helm import CHART, K8S, run_helm
from tests.tools import fetched_tool, load_script

COMPONENT = ROOT / "deploy" / "kustomize" / "sidecar"


def kubectl() -> str:
    return fetched_tool("kubectl")


def generator() -> Any:
    return load_script(ROOT / "deploy" / "kustomize" / "generate.py")


def workload(kind: str, name: str, inject: bool, pod_annotations: dict[str, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}, "annotations": pod_annotations},
            "spec": {
                "containers": [{"name": "vllm", "image": "vllm/vllm-openai", "args": ["x"]}],
                "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}],
            },
        },
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    meta: dict[str, Any] = {"name": name}
    if inject:
        meta["annotations"] = {"vllm-profile-exporter/inject": "true"}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec}


def test_the_patches_are_the_charts_current_rendering() -> None:
    gen = generator()
    assert gen.main(["--check"]) == 0, "run deploy/kustomize/generate.py"


def test_annotated_workloads_get_the_sidecar_and_keep_their_own(tmp_path: Path) -> None:
    apps = [
        workload("Deployment", "vllm-a", True, {"vllm-profile-exporter/max-num-seqs": "16"}),
        workload("StatefulSet", "vllm-b", True, {}),
        workload("Deployment", "web", False, {}),
    ]
    (tmp_path / "apps.yaml").write_text(yaml.safe_dump_all(apps))
    shutil.copytree(COMPONENT, tmp_path / "sidecar")
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["apps.yaml"], "components": ["sidecar"]})
    )
    out = subprocess.run(
        [kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(out.stdout)}
    assert docs["web"] == apps[2]  # not annotated: untouched

    # The chart's container for a release named as the patches assume (the dcgm Service's name).
    r = run_helm("template", "vllm-profile-exporter", str(CHART), "--set", "mode=sidecar")
    assert r.returncode == 0, r.stderr
    (snippet,) = [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "ConfigMap"]
    chart = yaml.safe_load(snippet["data"]["container.yaml"])
    assert (
        "--dcgm-url=http://vllm-profile-exporter-dcgm.gpu-operator.svc:9400/metrics"
        in (chart["args"])
    )
    for name, label in (("vllm-a", "pod-template-hash"), ("vllm-b", "controller-revision-hash")):
        doc = docs[name]
        kubernetes_validate.validate(doc, K8S, strict=True)
        pod = doc["spec"]["template"]
        containers = {c["name"]: c for c in pod["spec"]["containers"]}
        assert containers["vllm"] == {"name": "vllm", "image": "vllm/vllm-openai", "args": ["x"]}
        sidecar = containers["vllm-profile-exporter"]
        # The chart's container, but for the revision label its workload kind puts on pods.
        env = {e["name"]: e for e in sidecar["env"]}
        field = env["VLLM_PROFILE_CONFIG_REVISION"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert field == f"metadata.labels['{label}']"
        assert {k: v for k, v in sidecar.items() if k != "env"} == {
            k: v for k, v in chart.items() if k != "env"
        }
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert set(volumes) == {"shm", "vllm-profile-exporter-pod"}
        assert volumes["vllm-profile-exporter-pod"]["downwardAPI"]["items"][0]["fieldRef"] == {
            "fieldPath": "metadata.annotations"
        }
    assert docs["vllm-a"]["spec"]["template"]["metadata"]["annotations"] == {
        "vllm-profile-exporter/max-num-seqs": "16"
    }
