"""The Helm chart: lint, render with several values files, validate what it renders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from exporter import cli
from exporter.catalog.schema import parse_catalog
from tests.tools import fetched_tool, require_tool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy" / "prometheus"))
import generate as rules_generator  # noqa: E402

from tests.paths import ROOT

CHART = ROOT / "deploy" / "helm" / "vllm-profile-exporter"
CI = CHART / "ci"
K8S = "1.30.0"
CORE_KINDS = {"Deployment", "Service", "ServiceAccount", "ConfigMap"}


def helm() -> str:
    return fetched_tool("helm")


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


def test_the_engine_value_reaches_the_exporter() -> None:
    (deployment,) = kinds(render(sets=("config.engine=sglang",)))["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--engine=sglang" in container["args"]
    assert cli._config(cli.build_parser().parse_args(container["args"]), {}).engine == "sglang"
    r = run_helm("lint", "--strict", str(CHART), "--set", "config.engine=tgi")
    assert r.returncode != 0 and "engine" in r.stdout + r.stderr


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


def expected_rules(values: dict[str, Any]) -> list[dict[str, Any]]:
    """What deploy/prometheus/generate.py makes of a values file's prometheusRule settings."""
    v = {**yaml.safe_load((CHART / "values.yaml").read_text())["prometheusRule"],
         **values.get("prometheusRule", {})}  # fmt: skip
    slo = {"objective": 0.99, "minRequests": 100, **v.get("slo", {})}
    th = {"queueTimeSeconds": 1, "requestErrorRatio": 0.01, "requestMinRequests": 20,
          **v.get("thresholds", {})}  # fmt: skip
    settings = rules_generator.Settings(
        cluster_label=v["clusterLabel"], slo_objective=slo["objective"],
        slo_min_requests=slo["minRequests"], queue_time_seconds=th["queueTimeSeconds"],
        request_error_ratio=th["requestErrorRatio"], request_min_requests=th["requestMinRequests"],
        rollout_min_samples=v.get("rollout", {}).get("minSamples", 15),
        runbook_base_url=v["runbookBaseUrl"],
    )  # fmt: skip
    out = []
    for group in rules_generator.groups(settings):
        if group["name"] in v["disabledGroups"]:
            continue
        rules = [r for r in group["rules"] if r.get("alert") not in v["disabledAlerts"]
                 and ("record" not in r or v["recordingRules"])]  # fmt: skip
        if not rules:
            continue
        for r in rules:
            if "alert" in r:
                r["labels"] = {**v["extraLabels"], **r["labels"]}
        out.append({"name": group["name"], "rules": rules})
    return out


RULE_VALUES = [v for v in VALUES if v and "prometheusRule" in (CI / v).read_text()]


@pytest.mark.parametrize("values", RULE_VALUES)
def test_prometheus_rule_is_the_generated_rules_with_the_values(
    values: str, tmp_path: Path
) -> None:
    given = yaml.safe_load((CI / values).read_text())
    (rule,) = kinds(render(values, crds=not given.get("assumeMonitoringApi")))["PrometheusRule"]
    assert rule["metadata"]["namespace"] == given["prometheusRule"].get("namespace", "inference")
    assert rule["spec"]["groups"] == expected_rules(given)
    out = tmp_path / "spec.yaml"
    out.write_text(yaml.safe_dump(rule["spec"]))
    r = subprocess.run(
        [require_tool("promtool"), "check", "rules", "--lint=all", "--lint-fatal", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_tuned_rules_say_what_the_values_say() -> None:
    # Read in the rendered text itself, not through the generator: the values reach the rules.
    (rule,) = kinds(render("sidecar-tuned-rules-values.yaml", crds=False))["PrometheusRule"]
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    names = {g["name"] for g in rule["spec"]["groups"]}
    assert "vllm-profile-fleet" not in names and "VLLMProfileUnderBatching" not in alerts
    fast = alerts["VLLMProfileTTFTBudgetFastBurn"]
    assert "> (14.4 * (1 - 0.995))" in fast["expr"] and ">= 500" in fast["expr"]
    records = {r["record"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]
               if "record" in r}  # fmt: skip
    ratio = records["cluster_namespace_model:vllm_profile_slo_ttft_errors:ratio_rate1h"]
    assert "by (k8s_cluster, namespace, model)" in ratio
    assert "on (k8s_cluster, instance, job)" in ratio
    assert fast["labels"] == {"team": "inference", "routing": "pager-inference",
                              "severity": "critical"}  # fmt: skip
    assert "> 0.25" in alerts["VLLMProfileLongQueueTime"]["expr"]
    assert "on (k8s_cluster, instance, job)" in alerts["VLLMProfileExporterDown"]["expr"]
    assert "cluster" not in alerts["VLLMProfileExporterDown"]["expr"].replace("k8s_cluster", "")


def test_dashboards_configmaps() -> None:
    cms = [
        c
        for c in kinds(render("standalone-monitors-values.yaml"))["ConfigMap"]
        if c["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert len(cms) == 2
    for cm in cms:
        ((key, text),) = cm["data"].items()
        name = key.removeprefix("rel-vllm-profile-exporter-")  # the release's own file key
        assert key != name
        assert json.loads(text) == json.loads((ROOT / "deploy" / "grafana" / name).read_text())


def test_dashboards_take_the_cluster_label_of_the_rules() -> None:
    # Under a Thanos whose external label is k8s_cluster, the cluster variable reads that label.
    cms = [c for c in kinds(render(sets=("grafanaDashboard.enabled=true",
                                          "prometheusRule.clusterLabel=k8s_cluster")))["ConfigMap"]
           if c["metadata"]["labels"].get("grafana_dashboard") == "1"]  # fmt: skip
    assert len(cms) == 2
    for cm in cms:
        ((key, text),) = cm["data"].items()
        name = key.removeprefix("rel-vllm-profile-exporter-")
        shipped = json.loads((ROOT / "deploy" / "grafana" / name).read_text())
        rendered = json.loads(text)
        (const,) = [v for v in rendered["templating"]["list"] if v["name"] == "cluster_label"]
        assert const["query"] == const["current"]["value"] == "k8s_cluster"
        # Nothing else changed.
        for d in (shipped, rendered):
            d["templating"]["list"] = [v for v in d["templating"]["list"]
                                       if v["name"] != "cluster_label"]  # fmt: skip
        assert rendered == shipped


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
    # dcgm-exporter opens no hostPort: its pods are reached through a node-local Service, by
    # default where the GPU operator runs them.
    local = "http://rel-vllm-profile-exporter-dcgm.gpu-operator.svc:9400/metrics"
    assert "--gpu-source=dcgm" in args and f"--dcgm-url={local}" in args
    assert "NODE_IP" not in env
    assert env["VLLM_PROFILE_DCGM_POD"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # The pod's template hash names its configuration's revision (rollouts are compared by it).
    revision = env["VLLM_PROFILE_CONFIG_REVISION"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert revision == "metadata.labels['pod-template-hash']"
    # A sidecar's readiness would decide the vLLM pod's: none; liveness restarts it alone.
    assert "readinessProbe" not in container
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    native = yaml.safe_load(snippet["data"]["native-sidecar.yaml"])
    assert native == container | {"restartPolicy": "Always"}
    # In a vLLM pod (often root) the sidecar runs as its own non-root user, whatever vLLM's.
    sc = container["securityContext"]
    assert (sc["runAsNonRoot"], sc["runAsUser"], sc["runAsGroup"]) == (True, 65534, 65534)
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"} and sc["readOnlyRootFilesystem"]
    (svc,) = k["Service"]  # no exporter Service in sidecar mode: the dcgm one only
    assert svc["metadata"]["name"] == "rel-vllm-profile-exporter-dcgm"
    assert svc["metadata"]["namespace"] == "gpu-operator"
    assert svc["spec"]["internalTrafficPolicy"] == "Local"
    assert svc["spec"]["selector"] == {"app": "nvidia-dcgm-exporter"}
    assert svc["spec"]["ports"][0]["port"] == svc["spec"]["ports"][0]["targetPort"] == 9400
    # Not selected by the exporter's own ServiceMonitor (the selector labels differ).
    assert svc["metadata"]["labels"]["app.kubernetes.io/name"] != "vllm-profile-exporter"


def test_each_pod_sets_its_own_settings_by_annotation(tmp_path: Path) -> None:
    """One release, pods that differ: the container's own arguments, parsed by the exporter's
    own CLI with the file the downward API volume would hold, give each pod its settings."""
    k = kinds(render("sidecar-dcgm-values.yaml"))
    (snippet,) = [c for c in k["ConfigMap"] if c["metadata"]["name"].endswith("-sidecar")]
    container = yaml.safe_load(snippet["data"]["container.yaml"])
    (volume,) = [v for v in yaml.safe_load(snippet["data"]["volumes.yaml"]) if "downwardAPI" in v]
    (item,) = volume["downwardAPI"]["items"]
    assert item["fieldRef"]["fieldPath"] == "metadata.annotations"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    path = f"{mount['mountPath']}/{item['path']}"
    assert (
        f"--pod-annotations={path}" in container["args"]
        and "--max-num-seqs=64" in container["args"]
    )

    def settings(annotations: str) -> Any:
        (tmp_path / "annotations").write_text(annotations)
        args = [a.replace(path, str(tmp_path / "annotations")) for a in container["args"]]
        return cli._config(cli.build_parser().parse_args(args), {})

    small = settings(
        'vllm-profile-exporter/max-num-seqs="16"\nvllm-profile-exporter/tensor-parallel-size="2"'
    )
    big = settings(
        'vllm-profile-exporter/max-num-seqs="512"\nvllm-profile-exporter/vllm-url="http://localhost:8200"'
    )
    bare = settings('app="vllm"')
    assert (small.max_num_seqs, small.tp, small.vllm_url) == (16, 2, "http://localhost:8000")
    assert (big.max_num_seqs, big.tp, big.vllm_url) == (512, None, "http://localhost:8200")
    assert (bare.max_num_seqs, bare.tp) == (64, None)  # the release's
    # Switched off: no file, no volume; the revision still comes from the pod with NVML.
    off = kinds(
        render(
            "sidecar-dcgm-values.yaml", sets=("config.podSettings=false", "config.gpuSource=nvml")
        )
    )
    (snippet,) = [c for c in off["ConfigMap"] if c["metadata"]["name"].endswith("-sidecar")]
    container = yaml.safe_load(snippet["data"]["container.yaml"])
    assert not any(a.startswith("--pod-annotations") for a in container["args"])
    assert "volumes.yaml" not in snippet["data"] and "volumeMounts" not in container
    assert [e["name"] for e in container["env"]] == ["VLLM_PROFILE_CONFIG_REVISION"]


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
    assert pm["spec"]["podTargetLabels"] == ["team"]


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
    assert rules_generator.main(["--check"]) == 0  # rules.yaml and the chart's template
    for name in ("vllm-profile-overview.json", "vllm-profile-fleet.json"):
        copy = files / "dashboards" / name
        assert not copy.is_symlink(), "a packaged chart must hold its own files"
        assert copy.read_text() == (ROOT / "deploy/grafana" / name).read_text()


def test_a_target_label_named_like_an_exported_label_is_refused() -> None:
    # podTargetLabels: [model] would turn vllm_profile_info{model} into exported_model.
    r = run_helm("template", "rel", str(CHART), "--api-versions", "monitoring.coreos.com/v1",
                 "--set", "mode=sidecar", "--set", "podMonitor.enabled=true",
                 "--set", "podMonitor.selector.app=vllm",
                 "--set", "podMonitor.podTargetLabels={team,model}")  # fmt: skip
    assert r.returncode != 0 and '"model" is a label of the exporter\'s own series' in r.stderr
    # The chart's list is every label the exporter's families carry, no more, no fewer.
    from exporter.export import collector

    families = [f for n in dir(collector) if n.endswith("FAMILIES")
                for f in getattr(collector, n)]  # fmt: skip
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    listed = helpers.split('define "vllm-profile-exporter.exportedLabels" -}}')[1]
    listed = listed.split("{{- end }}")[0].split()
    assert sorted(listed) == sorted({label for f in families for label in f.labels})


# --- pulling, placing and composing the chart -------------------------------------------------

APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
DIGEST = "sha256:" + "ab" * 32


def exporter_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = kinds(docs)["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_image_values_in_the_usual_shape() -> None:
    plain = exporter_container(render())
    assert plain["image"] == f"ghcr.io/vllm-profile-exporter/vllm-profile-exporter:{APP_VERSION}"
    pinned = exporter_container(render(sets=(f"image.digest={DIGEST}", "image.tag=ignored")))
    assert pinned["image"] == f"ghcr.io/vllm-profile-exporter/vllm-profile-exporter@{DIGEST}"
    docs = render(
        sets=(
            "global.imageRegistry=mirror.example.com",
            "image.tag=1.2.3",
            "imagePullSecrets[0].name=mine",
            "global.imagePullSecrets[0].name=all",
        )
    )
    (deployment,) = kinds(docs)["Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == (
        "mirror.example.com/vllm-profile-exporter/vllm-profile-exporter:1.2.3"
    )
    assert spec["imagePullSecrets"] == [{"name": "mine"}, {"name": "all"}]
    r = run_helm("lint", "--strict", str(CHART), "--set", "image.digest=latest")
    assert r.returncode != 0 and "digest" in (r.stdout + r.stderr)


def test_runtime_class_topology_spread_and_network_policy() -> None:
    docs = render(sets=(
        "runtimeClassName=nvidia", "networkPolicy.enabled=true",
        "topologySpreadConstraints[0].maxSkew=1",
        "topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
        "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        "networkPolicy.from[0].namespaceSelector.matchLabels.name=monitoring",
    ))  # fmt: skip
    k = kinds(docs)
    (deployment,) = k["Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    assert spec["runtimeClassName"] == "nvidia"
    (spread,) = spec["topologySpreadConstraints"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert spread["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    assert spread["topologyKey"] == "topology.kubernetes.io/zone" and spread["maxSkew"] == 1
    (policy,) = k["NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 9709, "protocol": "TCP"}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress: vLLM, dcgm, DNS stay open
    for d in docs:
        kubernetes_validate.validate(d, K8S, strict=True)
    assert "NetworkPolicy" not in kinds(render())  # off by default


def test_dcgm_service_without_a_namespace_is_refused_with_what_to_set() -> None:
    r = run_helm("template", "rel", str(CHART), "-f", str(CI / "sidecar-dcgm-values.yaml"),
                 "--set", "config.dcgm.localService.namespace=")  # fmt: skip
    assert r.returncode != 0
    assert "config.dcgm.localService.namespace" in r.stderr and "gpu-operator" in r.stderr
    # dcgm-exporter's own chart, in its release's namespace: the Service goes there.
    k = kinds(render("sidecar-dcgm-values.yaml", sets=(
        "config.dcgm.localService.namespace=monitoring",
        "config.dcgm.localService.selector.app\\.kubernetes\\.io/name=dcgm-exporter",
    )))  # fmt: skip
    (svc,) = k["Service"]
    assert svc["metadata"]["namespace"] == "monitoring"
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "dcgm-exporter"}


def test_the_chart_works_as_a_dependency(tmp_path: Path) -> None:
    """An umbrella chart that depends on this one, sets ``global`` values and renders the
    exporter into its own vLLM Deployment through the container template."""
    umbrella = tmp_path / "umbrella"
    shutil.copytree(CHART, umbrella / "charts" / "vllm-profile-exporter")
    (umbrella / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "umbrella", "version": "0.1.0",
        "dependencies": [{"name": "vllm-profile-exporter", "version": APP_VERSION}],
    }))  # fmt: skip
    (umbrella / "values.yaml").write_text(yaml.safe_dump({
        "global": {"imageRegistry": "mirror.example.com"},
        "vllm-profile-exporter": {"mode": "sidecar", "config": {"maxNumSeqs": 64},
                                  "podMonitor": {"enabled": True, "selector": {"app": "vllm"}}},
    }))  # fmt: skip
    (umbrella / "templates").mkdir()
    (umbrella / "templates" / "vllm.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: vllm\nspec:\n"
        "  selector:\n    matchLabels: {app: vllm}\n  template:\n"
        "    metadata:\n      labels: {app: vllm}\n    spec:\n      containers:\n"
        "        - name: vllm\n          image: vllm/vllm-openai\n"
        '        - {{- include "vllm-profile-exporter.container"'
        ' (index .Subcharts "vllm-profile-exporter") | nindent 10 }}\n'
    )
    r = run_helm("template", "top", str(umbrella), "--kube-version", K8S,
                 "--api-versions", "monitoring.coreos.com/v1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    k = kinds([d for d in yaml.safe_load_all(r.stdout) if d])
    vllm = next(d for d in k["Deployment"] if d["metadata"]["name"] == "vllm")
    _, exporter = vllm["spec"]["template"]["spec"]["containers"]
    assert exporter["name"] == "vllm-profile-exporter"
    assert exporter["image"] == (
        f"mirror.example.com/vllm-profile-exporter/vllm-profile-exporter:{APP_VERSION}"
    )
    assert {"--max-num-seqs=64", "--vllm-url=http://localhost:8000"} <= set(exporter["args"])
    # Sidecar mode: the subchart adds its PodMonitor and no workload of its own.
    assert "PodMonitor" in k and [d["metadata"]["name"] for d in k["Deployment"]] == ["vllm"]
    for d in [d for d in yaml.safe_load_all(r.stdout) if d]:
        if d["kind"] in CORE_KINDS:
            kubernetes_validate.validate(d, K8S, strict=True)


@pytest.mark.parametrize(("mode", "key", "kind", "endpoints"), [
    ("standalone", "serviceMonitor", "ServiceMonitor", "endpoints"),
    ("sidecar", "podMonitor", "PodMonitor", "podMetricsEndpoints"),
])  # fmt: skip
def test_monitors_take_the_operator_fields(mode: str, key: str, kind: str, endpoints: str) -> None:
    sets = (f"mode={mode}", f"{key}.enabled=true", f"{key}.namespace=monitoring",
            f"{key}.jobLabel=app", f"{key}.honorLabels=true", f"{key}.sampleLimit=600",
            f"{key}.targetLimit=50", f"{key}.labelLimit=40", f"{key}.labelNameLengthLimit=128",
            f"{key}.labelValueLengthLimit=512", f"{key}.attachMetadata.node=true",
            f"{key}.proxyUrl=http://proxy.example:3128",
            "podMonitor.selector.app=vllm")  # fmt: skip
    docs = render(sets=sets)
    (monitor,) = kinds(docs)[kind]
    spec = monitor["spec"]
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert spec["namespaceSelector"] == {"matchNames": ["inference"]}  # the targets stay put
    assert (spec["jobLabel"], spec["sampleLimit"], spec["targetLimit"], spec["labelLimit"]) == (
        "app",
        600,
        50,
        40,
    )
    assert (spec["labelNameLengthLimit"], spec["labelValueLengthLimit"]) == (128, 512)
    assert spec["attachMetadata"] == {"node": True}
    (endpoint,) = spec[endpoints]
    assert endpoint["honorLabels"] is True and endpoint["proxyUrl"] == "http://proxy.example:3128"
    validate_monitoring([monitor])
    # Unset, none of them is written.
    (plain,) = kinds(render(sets=(f"mode={mode}", f"{key}.enabled=true",
                                  "podMonitor.selector.app=vllm")))[kind]  # fmt: skip
    assert not {"jobLabel", "sampleLimit", "attachMetadata"} & set(plain["spec"])
    assert plain["metadata"]["namespace"] == "inference"


def test_two_releases_in_one_cluster_do_not_collide() -> None:
    """Two exporters' releases beside one Prometheus and one Grafana: every object has its own
    name, each dashboard ConfigMap its own file key (the Grafana sidecar writes one file per key:
    a shared key would be overwritten, and deleted with either release), the dashboards keep one
    uid each (Grafana shows them once), and the recording rules are rendered once."""
    common = ("prometheusRule.enabled=true", "grafanaDashboard.enabled=true",
              "serviceMonitor.enabled=true")  # fmt: skip
    a = render(sets=common)
    r = run_helm(
        "template",
        "second",
        str(CHART),
        "--namespace",
        "inference",
        "--api-versions",
        "monitoring.coreos.com/v1",
        "--kube-version",
        K8S,
        *[x for s in (*common, "prometheusRule.recordingRules=false") for x in ("--set", s)],
    )
    assert r.returncode == 0, r.stderr
    b = [d for d in yaml.safe_load_all(r.stdout) if d]
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in a + b]
    assert len(names) == len(set(names)), names
    dashboards = [d for d in a + b if d["kind"] == "ConfigMap" and "grafana_dashboard" in
                  d["metadata"]["labels"]]  # fmt: skip
    keys = [k for d in dashboards for k in d["data"]]
    assert len(dashboards) == 4 and len(keys) == len(set(keys)), keys
    uids = {json.loads(v)["uid"] for d in dashboards for v in d["data"].values()}
    assert len(uids) == 2  # the overview and the fleet, once each
    records = [rule["record"] for d in a + b if d["kind"] == "PrometheusRule"
               for g in d["spec"]["groups"] for rule in g["rules"] if "record" in rule]  # fmt: skip
    assert records and len(records) == len(set(records))
    (second_rules,) = [d for d in b if d["kind"] == "PrometheusRule"]
    alerts = [rule for g in second_rules["spec"]["groups"] for rule in g["rules"]]
    assert alerts and all("alert" in rule for rule in alerts)  # its alerts stay


def test_the_values_table_in_the_docs_is_current_and_complete() -> None:
    sys.path.insert(0, str(ROOT / "deploy" / "helm"))
    import values_table  # noqa: PLC0415

    r = subprocess.run([sys.executable, str(ROOT / "deploy" / "helm" / "values_table.py"),
                        "--check"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    rows = values_table.rows((CHART / "values.yaml").read_text())
    # Every value the schema knows is in the table, and each row says what it does.
    schema = json.loads((CHART / "values.schema.json").read_text())
    top = {path.split(".")[0] for path, _, _ in rows}
    assert set(schema["properties"]) - {"global"} == top
    assert [path for path, _, words in rows if not words] == []
