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


MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def validate_monitoring(docs: list[dict[str, Any]]) -> None:
    """prometheus-operator objects against validators generated from the operator's CRD
    schemas (@kubernetes-models/prometheus-operator, installed by scripts/test)."""
    models = ROOT / ".tools" / "k8s-models" / "node_modules"
    node = shutil.which("node")
    if node is None or not (models / "@kubernetes-models" / "prometheus-operator").is_dir():
        msg = "node or @kubernetes-models/prometheus-operator missing (scripts/test installs it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    r = subprocess.run(
        [node, str(ROOT / "tests" / "deploy" / "validate_crds.mjs")],
        input=json.dumps(docs), capture_output=True, text=True, timeout=120,
        env={**os.environ, "MODELS_DIR": str(models)},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def sidecar_pod(snippet: dict[str, Any]) -> dict[str, Any]:
    """A vLLM-like pod with the sidecar ConfigMap's container, native sidecar and volumes."""
    data = snippet["data"]
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "vllm-0"},
        "spec": {
            "containers": [{"name": "vllm", "image": "vllm/vllm-openai"},
                           yaml.safe_load(data["container.yaml"])],
            "initContainers": [yaml.safe_load(data["native-sidecar.yaml"])
                               | {"name": "vllm-profile-exporter-native"}],
            "volumes": yaml.safe_load(data.get("volumes.yaml", "[]")),
        },
    }  # fmt: skip


@pytest.mark.parametrize("values", VALUES)
def test_every_rendered_manifest_validates(values: str) -> None:
    """Every object of every values file: core kinds against Kubernetes' own schemas (strict:
    an unknown field fails), the monitoring kinds against prometheus-operator's; the sidecar
    snippets inside a pod."""
    docs = render(*([values] if values else []))
    monitoring = []
    for d in docs:
        if d["kind"] in CORE_KINDS:
            kubernetes_validate.validate(d, K8S, strict=True)
        elif d["kind"] in MONITORING_KINDS:
            monitoring.append(d)
        else:
            raise AssertionError(f"no validator for {d['kind']}")
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-sidecar"):
            kubernetes_validate.validate(sidecar_pod(d), K8S, strict=True)
    if monitoring:
        validate_monitoring(monitoring)


def test_an_invalid_monitor_is_refused_by_the_validator() -> None:
    """The CRD validator can fail: a scheme and a basic auth that prometheus-operator rejects."""
    (sm,) = kinds(render("standalone-monitors-values.yaml"))["ServiceMonitor"]
    sm["spec"]["endpoints"][0] |= {"scheme": "htps", "basicAuth": {"username": "u"}}
    with pytest.raises(AssertionError, match="scheme must be equal to one of the allowed"):
        validate_monitoring([sm])


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
    assert "Deployment" not in k
    (pm,) = k["PodMonitor"]
    assert pm["spec"]["selector"]["matchLabels"] == {"app": "vllm"}
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["inference"]}
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "vllm-profile"
    (snippet,) = [c for c in k["ConfigMap"] if c["metadata"]["name"].endswith("-sidecar")]
    container = yaml.safe_load(snippet["data"]["container.yaml"])
    args, env = container["args"], {e["name"]: e for e in container["env"]}
    assert "--vllm-url=http://localhost:8000" in args
    # dcgm-exporter's chart opens no hostPort: its pods are reached through a node-local Service.
    local = "http://rel-vllm-profile-exporter-dcgm.inference.svc:9400/metrics"
    assert "--gpu-source=dcgm" in args and f"--dcgm-url={local}" in args
    assert "NODE_IP" not in env
    assert env["VLLM_PROFILE_DCGM_POD"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # A sidecar's readiness would decide the vLLM pod's: none; liveness restarts it alone.
    assert "readinessProbe" not in container
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    native = yaml.safe_load(snippet["data"]["native-sidecar.yaml"])
    assert native == container | {"restartPolicy": "Always"}
    (svc,) = k["Service"]  # no exporter Service in sidecar mode: the dcgm one only
    assert svc["metadata"]["name"] == "rel-vllm-profile-exporter-dcgm"
    assert svc["metadata"]["namespace"] == "inference"
    assert svc["spec"]["internalTrafficPolicy"] == "Local"
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "dcgm-exporter"}
    assert svc["spec"]["ports"][0]["port"] == svc["spec"]["ports"][0]["targetPort"] == 9400
    # Not selected by the exporter's own ServiceMonitor (the selector labels differ).
    assert svc["metadata"]["labels"]["app.kubernetes.io/name"] != "vllm-profile-exporter"


def test_gpu_operator_dcgm_and_pods_in_every_namespace() -> None:
    k = kinds(render("sidecar-gpu-operator-values.yaml"))
    (svc,) = k["Service"]
    assert svc["metadata"]["namespace"] == "gpu-operator"
    assert svc["spec"]["selector"] == {"app": "nvidia-dcgm-exporter"}
    (snippet,) = [c for c in k["ConfigMap"] if c["metadata"]["name"].endswith("-sidecar")]
    args = yaml.safe_load(snippet["data"]["container.yaml"])["args"]
    assert "--dcgm-url=http://rel-vllm-profile-exporter-dcgm.gpu-operator.svc:9400/metrics" in args
    (pm,) = k["PodMonitor"]
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    assert pm["spec"]["podTargetLabels"] == ["model"]


def test_a_dcgm_url_on_the_node_address_renders_no_service() -> None:
    url = "http://$(NODE_IP):9400/metrics"
    k = kinds(render("sidecar-dcgm-values.yaml", sets=(f"config.dcgm.url={url}",)))
    assert "Service" not in k
    (snippet,) = [c for c in k["ConfigMap"] if c["metadata"]["name"].endswith("-sidecar")]
    container = yaml.safe_load(snippet["data"]["container.yaml"])
    env = {e["name"]: e for e in container["env"]}
    assert f"--dcgm-url={url}" in container["args"]
    assert env["NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"


def test_locked_down_tls_basic_auth_and_extras() -> None:
    k = kinds(render("standalone-locked-down-values.yaml"))
    (dep,) = k["Deployment"]
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert "--web.config.file=/etc/vllm-profile-exporter-web/web-config.yml" in c["args"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["vllm-profile-exporter-web"]["mountPath"] == "/etc/vllm-profile-exporter-web"
    assert mounts["vllm-ca"] == {"name": "vllm-ca", "mountPath": "/etc/vllm-ca", "readOnly": True}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["vllm-profile-exporter-web"]["secret"]["secretName"] == "vllm-profile-web"
    assert volumes["vllm-ca"]["configMap"] == {"name": "vllm-ca"}
    assert {"name": "SSL_CERT_FILE", "value": "/etc/vllm-ca/ca.crt"} in c["env"]
    assert pod["metadata"]["labels"]["team"] == "inference"
    # Basic auth covers every path and the kubelet sends no password: the port is probed.
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["tcpSocket"] == {"port": "vllm-profile"} and "httpGet" not in c[probe]
    (sm,) = k["ServiceMonitor"]
    (ep,) = sm["spec"]["endpoints"]
    assert ep["scheme"] == "https"
    assert ep["tlsConfig"] == {
        "ca": {"secret": {"name": "vllm-profile-web", "key": "ca.crt"}},
        "serverName": "rel-vllm-profile-exporter.inference.svc",
    }
    assert ep["basicAuth"] == {
        "username": {"name": "vllm-profile-scrape", "key": "username"},
        "password": {"name": "vllm-profile-scrape", "key": "password"},
    }
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["inference"]}
    assert sm["spec"]["podTargetLabels"] == ["team"]


def test_tls_alone_probes_over_https_and_auth_needs_its_secret() -> None:
    (dep,) = kinds(render(sets=("webConfig.secretName=web", "webConfig.tls=true")))["Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"] == {
        "path": "/-/ready", "port": "vllm-profile", "scheme": "HTTPS"}  # fmt: skip
    r = run_helm("template", "rel", str(CHART), "--api-versions", "monitoring.coreos.com/v1",
                 "--set", "serviceMonitor.enabled=true", "--set", "webConfig.secretName=web",
                 "--set", "webConfig.basicAuth=true")  # fmt: skip
    assert r.returncode != 0 and "webConfig.basicAuth needs webConfig.scrapeBasicAuth" in r.stderr


def test_notes_say_how_to_look() -> None:
    for values, forward in (("", "deploy/rel-vllm-profile-exporter 9709"),
                            ("sidecar-dcgm-values.yaml", "pod/<a vLLM pod> 9709")):  # fmt: skip
        args = ["install", "rel", str(CHART), "--dry-run", "--namespace", "inference"]
        r = run_helm(*args, *(["-f", str(CI / values)] if values else []))
        assert r.returncode == 0, r.stderr
        notes = r.stdout.split("NOTES:", 1)[1]
        assert f"kubectl -n inference port-forward {forward}" in notes
        assert "curl -s http://localhost:9709/metrics" in notes
    r = run_helm("install", "rel", str(CHART), "--dry-run", "-f",
                 str(CI / "standalone-locked-down-values.yaml"))  # fmt: skip
    assert "curl -sk -u USER https://localhost:9709/metrics" in r.stdout


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
