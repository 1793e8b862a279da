"""The Helm chart: lint, render with several values files, validate what it renders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from exporter.catalog.schema import parse_catalog
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "vllm-profile-exporter"
CI = CHART / "ci"
K8S = "1.30.0"
CORE_KINDS = {"Deployment", "Service", "ServiceAccount", "ConfigMap"}


def helm() -> str:
    local = ROOT / ".tools" / "helm" / "helm"
    if local.exists():
        return str(local)
    found = shutil.which("helm")
    if found is None:
        msg = "helm not installed (scripts/test fetches it into .tools/)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return found


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120)


def render(*values: str, crds: bool = True, sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    args = ["template", "rel", str(CHART), "--namespace", "inference", "--kube-version", K8S]
    if crds:
        args += ["--api-versions", "monitoring.coreos.com/v1"]
    for v in values:
        args += ["-f", str(CI / v)]
    for s in sets:
        args += ["--set", s]
    r = run_helm(*args)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def kinds(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


VALUES = ["", *sorted(p.name for p in CI.glob("*-values.yaml"))]


@pytest.mark.parametrize("values", VALUES)
def test_lint_strict(values: str) -> None:
    r = run_helm("lint", "--strict", str(CHART), *(["-f", str(CI / values)] if values else []))
    assert r.returncode == 0, r.stdout + r.stderr


def test_schema_rejects_bad_values() -> None:
    r = run_helm("lint", "--strict", str(CHART), "--set", "port=abc")
    assert r.returncode != 0 and "port" in r.stdout + r.stderr
    r = run_helm("lint", "--strict", str(CHART), "--set", "config.gpuSource=magic")
    assert r.returncode != 0
    r = run_helm("lint", "--strict", str(CHART), "--set", "unknownKey=1")
    assert r.returncode != 0


@pytest.mark.parametrize("values", VALUES)
def test_core_objects_validate_against_kubernetes(values: str) -> None:
    docs = render(*([values] if values else []))
    for d in docs:
        if d["kind"] in CORE_KINDS:
            kubernetes_validate.validate(d, K8S, strict=True)


def test_standalone_defaults() -> None:
    k = kinds(render(crds=False))
    assert set(k) == {"Deployment", "Service", "ServiceAccount"}
    (dep,) = k["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert c["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # Standalone pods see no GPU: the default GPU source is none, never a silent NVML failure.
    assert "--gpu-source=none" in c["args"] and "--vllm-url=http://vllm:8000" in c["args"]


def test_monitors_are_gated_on_the_crd_api() -> None:
    without = kinds(render("standalone-monitors-values.yaml", crds=False))
    assert not {"ServiceMonitor", "PrometheusRule", "PodMonitor"} & set(without)
    with_crds = kinds(render("standalone-monitors-values.yaml"))
    (sm,) = with_crds["ServiceMonitor"]
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["port"] == "vllm-profile"
    (svc,) = with_crds["Service"]
    assert svc["spec"]["ports"][0]["name"] == "vllm-profile"


def test_prometheus_rule_is_the_shipped_rules_file(tmp_path: Path) -> None:
    (rule,) = kinds(render("standalone-monitors-values.yaml"))["PrometheusRule"]
    shipped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yaml").read_text())
    # Same rules, with the runbook base rewritten to the configured one.
    text = json.dumps(shipped).replace(
        "https://github.com/vllm-profile-exporter/vllm-profile-exporter/blob/main/",
        "https://wiki.example.com/vllm-profile/",
    )
    assert rule["spec"] == json.loads(text)
    out = tmp_path / "spec.yaml"
    out.write_text(yaml.safe_dump(rule["spec"]))
    r = subprocess.run(
        [require_tool("promtool"), "check", "rules", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboards_configmaps() -> None:
    cms = [
        c
        for c in kinds(render("standalone-monitors-values.yaml"))["ConfigMap"]
        if c["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert len(cms) == 2
    for cm in cms:
        ((name, text),) = cm["data"].items()
        assert text.strip() == (ROOT / "deploy" / "grafana" / name).read_text().strip()


def test_sidecar_mode() -> None:
    k = kinds(render("sidecar-dcgm-values.yaml"))
    assert "Deployment" not in k and "Service" not in k
    (pm,) = k["PodMonitor"]
    assert pm["spec"]["selector"]["matchLabels"] == {"app": "vllm"}
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "vllm-profile"
    (snippet,) = [c for c in k["ConfigMap"] if c["metadata"]["name"].endswith("-sidecar")]
    container = yaml.safe_load(snippet["data"]["container.yaml"])
    args, env = container["args"], {e["name"]: e for e in container["env"]}
    assert "--vllm-url=http://localhost:8000" in args
    assert "--gpu-source=dcgm" in args and "--dcgm-url=http://$(NODE_IP):9400/metrics" in args
    assert env["NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert env["VLLM_PROFILE_DCGM_POD"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # The snippet is a valid container: validate it inside a vLLM-like pod.
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "vllm-0"},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}, container]},
    }  # fmt: skip
    kubernetes_validate.validate(pod, K8S, strict=True)


def test_sidecar_needs_a_pod_selector() -> None:
    r = run_helm(
        "template", "rel", str(CHART), "--api-versions", "monitoring.coreos.com/v1",
        "--set", "mode=sidecar", "--set", "podMonitor.enabled=true",
    )  # fmt: skip
    assert r.returncode != 0 and "podMonitor.selector must select the vLLM pods" in r.stderr


def test_catalog_values_become_a_mounted_catalog_file() -> None:
    k = kinds(render("standalone-nvml-catalog-values.yaml"))
    (cm,) = [c for c in k["ConfigMap"] if c["metadata"]["name"].endswith("-catalog")]
    catalog = parse_catalog(cm["data"]["catalog.yaml"], "catalog.yaml")  # the exporter's loader
    assert catalog.models["Acme 13B"].params_b == 13
    (dep,) = k["Deployment"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert "--catalog-file=/etc/vllm-profile-exporter/catalog.yaml" in c["args"]
    assert {"--gpu-source=nvml", "--dtype=fp8", "--price=spot", "--compute-peak=fp32"} <= set(
        c["args"]
    )
    assert c["volumeMounts"][0]["mountPath"] == "/etc/vllm-profile-exporter"


def test_single_source_files() -> None:
    files = CHART / "files"
    assert (files / "rules.yaml").resolve() == (ROOT / "deploy/prometheus/rules.yaml").resolve()
    for name in ("vllm-profile-overview.json", "vllm-profile-fleet.json"):
        assert (files / "dashboards" / name).resolve() == (ROOT / "deploy/grafana" / name).resolve()
