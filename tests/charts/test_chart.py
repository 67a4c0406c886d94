"""The Helm chart: lint, render and validate offline with a real Helm (helm-python-sdk embeds
Helm v4 as a library) and kubernetes-validate --strict, for every values file under ci/; the
schema refuses bad values with a message naming the key; the rendered environment is accepted
by the adapters' own CLIs (so chart and flags cannot drift apart).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from tests.support.components import require

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "dicom-adapter"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
#: The Grafana dashboard, and the chart's copy of it that the ConfigMap ships.
DASHBOARD = ROOT / "docs" / "grafana" / "dicom-adapter.json"
CHART_DASHBOARD = CHART / "dashboards" / "dicom-adapter.json"
#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest known.
KUBE_VERSIONS = ("1.27.0", "1.37.0")
ADDRESS = "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb"
#: Environment variables the chart sets that are not flags of the adapters (yet).
NON_FLAG_ENV = {
    "TMPDIR",
    "ENV_AETS_JSON",  # read by the AET dictionary loader, as the reference adapter
    "ENV_DESTINATION_CONFIG_JSON",  # read by the routing config loader, as the reference adapter
}

@pytest.fixture(scope="module")
def helm() -> Any:
    """The helm_python module (Helm v4 as a library), or skip (fail in CI) without it."""
    require(importlib.util.find_spec("helm_python") is not None,
            "helm-python-sdk (pip install helm-python-sdk: Helm v4 as a library)")
    return importlib.import_module("helm_python")


@pytest.fixture(scope="module")
def chart(helm: Any) -> Iterator[Any]:
    with helm.Chart.load(str(CHART)) as loaded:
        yield loaded


def load_values(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    assert isinstance(data, dict)
    return data


def render(chart: Any, values: dict[str, Any] | None) -> dict[str, str]:
    rendered: dict[str, str] = chart.render(values, name="rel", namespace="imaging",
                                            is_install=True)
    return rendered


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def merged(extra: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {"import": {"enabled": True, "dicomwebAddress": ADDRESS}}

    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for key, value in b.items():
            out[key] = merge(a[key], value) if isinstance(value, dict) and isinstance(
                a.get(key), dict) else value
        return out

    return merge(base, extra)


# -- lint, render, validate each values file ----------------------------------------------------


def test_ci_values_files_cover_the_scenarios() -> None:
    names = {p.name for p in CI_VALUES}
    assert {"import-only-values.yaml", "export-only-values.yaml", "both-values.yaml",
            "spool-networkpolicy-values.yaml", "autoscaling-dashboard-values.yaml"} <= names


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_helm_lint_strict_is_clean(helm: Any, values_file: Path) -> None:
    report = helm.lint(str(CHART), load_values(values_file), strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert not problems and not report["errors"], report


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_rendered_manifests_pass_kubernetes_validate_strict(
    chart: Any, values_file: Path, tmp_path: Path
) -> None:
    executable = shutil.which("kubernetes-validate")
    require(executable is not None, "kubernetes-validate (pip install kubernetes-validate)")
    assert executable is not None
    docs = manifests(render(chart, load_values(values_file)))
    assert workloads(docs), "nothing rendered"
    target = tmp_path / "manifests.yaml"
    target.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    for version in KUBE_VERSIONS:
        result = subprocess.run(
            [executable, "--strict", "--quiet", "-k", version, str(target)],
            capture_output=True, text=True, check=False,
        )
        assert result.returncode == 0, f"k8s {version}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_pods_are_locked_down(chart: Any, values_file: Path) -> None:
    docs = manifests(render(chart, load_values(values_file)))
    pods = [w["spec"]["template"]["spec"] for w in workloads(docs)]
    pods += [p["spec"] for p in by_kind(docs, "Pod")]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"]["memory"]
    for workload in workloads(docs):
        spec = workload["spec"]["template"]["spec"]
        [container] = spec["containers"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts
        env = env_of(container)
        assert env["TMPDIR"] == "/tmp"
        assert spec["serviceAccountName"] == "rel-dicom-adapter"


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_rendered_environment_is_accepted_by_the_adapters_cli(
    chart: Any, values_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every DICOM_ADAPTER_* variable is a real flag, and its value parses."""
    docs = manifests(render(chart, load_values(values_file)))
    for workload in workloads(docs):
        [container] = workload["spec"]["template"]["spec"]["containers"]
        subcommand = container["args"][0]
        module = {"import": "import_adapter.cli", "export": "export_adapter.cli"}[subcommand]
        command = importlib.import_module(module).command
        flags = {p.envvar for p in command.params if isinstance(p, click.Option)}
        env = env_of(container)
        unknown = set(env) - flags - NON_FLAG_ENV
        assert not unknown, f"{subcommand}: chart sets variables that are no flags: {unknown}"
        for name in [n for n in os.environ if n.startswith("DICOM_ADAPTER_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            if name.startswith("DICOM_ADAPTER_"):
                monkeypatch.setenv(name, value)
        context = command.make_context(subcommand, [], resilient_parsing=False)
        for name in env:
            option = next((p for p in command.params if p.envvar == name), None)
            if option is not None and option.name:
                assert context.params[option.name] is not None, name


# -- what each scenario deploys ------------------------------------------------------------------


def test_import_only_deploys_the_guide_setup(chart: Any) -> None:
    docs = manifests(render(chart, load_values(CHART / "ci" / "import-only-values.yaml")))
    [deployment] = by_kind(docs, "Deployment")
    assert deployment["metadata"]["name"] == "rel-dicom-adapter-import"
    assert not by_kind(docs, "StatefulSet")
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["args"] == ["import"]
    assert container["image"] == "us-central1-docker.pkg.dev/my-project/imaging/dicom-adapter:0.1.0"
    env = env_of(container)
    assert env["DICOM_ADAPTER_DIMSE_PORT"] == "2575"
    assert env["DICOM_ADAPTER_METRICS_PORT"] == "8080"
    assert env["DICOM_ADAPTER_LOG_FORMAT"] == "json"
    assert env["DICOM_ADAPTER_MAX_PDU_SIZE"] == "1048576"  # not 1.048576e+06
    # Probes on the metrics port; scrape annotations.
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8080"
    # Draining: the pod's grace exceeds preStop + the adapter's --shutdown_grace.
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace > 5 + float(env["DICOM_ADAPTER_SHUTDOWN_GRACE"]) + 60
    # The internal LoadBalancer on 2575.
    [service] = [s for s in by_kind(docs, "Service") if s["spec"]["type"] == "LoadBalancer"]
    assert service["metadata"]["annotations"]["cloud.google.com/load-balancer-type"] == "Internal"
    assert service["spec"]["ports"] == [
        {"name": "dimse", "port": 2575, "targetPort": "dimse", "protocol": "TCP"}
    ]
    # The AET dictionary ConfigMap, given to the pod as ENV_AETS_JSON.
    [aets] = by_kind(docs, "ConfigMap")
    entries = json.loads(aets["data"]["AETs.json"])
    assert entries[0] == {"name": "PACS", "host": "10.128.0.20", "port": 104}
    ref = next(e for e in container["env"] if e["name"] == "ENV_AETS_JSON")
    assert ref["valueFrom"]["configMapKeyRef"] == {"name": aets["metadata"]["name"],
                                                   "key": "AETs.json"}
    # Workload Identity, PDB, helm test.
    [account] = by_kind(docs, "ServiceAccount")
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == (
        "dicom-adapter@my-project.iam.gserviceaccount.com")
    [pdb] = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    [test_pod] = by_kind(docs, "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert test_pod["spec"]["containers"][0]["command"] == [
        "python", "-m", "common.echo", "rel-dicom-adapter-import", "2575",
        "--aec", "IMPORTADAPTER", "--aet", "HELMTEST",
    ]


def test_export_only_deploys_replicas_with_flow_control(chart: Any) -> None:
    docs = manifests(render(chart, load_values(CHART / "ci" / "export-only-values.yaml")))
    [deployment] = by_kind(docs, "Deployment")
    assert deployment["metadata"]["name"] == "rel-dicom-adapter-export"
    assert deployment["spec"]["replicas"] == 3
    assert not by_kind(docs, "Service") and not by_kind(docs, "Pod")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["export"]
    env = env_of(container)
    assert env["DICOM_ADAPTER_WORKERS"] == "4"
    assert env["DICOM_ADAPTER_MAX_OUTSTANDING_MESSAGES"] == "32"
    assert env["DICOM_ADAPTER_MAX_OUTSTANDING_BYTES"] == "134217728"
    assert env["DICOM_ADAPTER_PEER_DIMSE_AET"] == "PACS"
    assert env["DICOM_ADAPTER_PEER_DIMSE_IP"] == "10.10.0.5"
    assert "DICOM_ADAPTER_PEER_DICOMWEB_ADDRESS" not in env
    # /metrics, /healthz, /readyz on the metrics port: probed and scraped.
    assert env["DICOM_ADAPTER_METRICS_PORT"] == "8080"
    assert container["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8080"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_both_with_bearer_secret_and_http2_store(chart: Any) -> None:
    docs = manifests(render(chart, load_values(CHART / "ci" / "both-values.yaml")))
    names = {d["metadata"]["name"] for d in workloads(docs)}
    assert names == {"rel-dicom-adapter-import", "rel-dicom-adapter-export"}
    imp = next(d for d in workloads(docs) if d["metadata"]["name"].endswith("import"))
    spec = imp["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == 180
    [container] = spec["containers"]
    env = env_of(container)
    assert env["DICOM_ADAPTER_AUTH"] == "bearer"
    assert env["DICOM_ADAPTER_STOW_RETRY_BUDGET"] == "45.5"
    token_file = Path(env["DICOM_ADAPTER_BEARER_TOKEN_FILE"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "bearer-token")
    assert str(token_file.parent) == mount["mountPath"]
    volume = next(v for v in spec["volumes"] if v["name"] == "bearer-token")
    assert volume["secret"] == {"secretName": "dicomweb-token",
                                "items": [{"key": "token", "path": token_file.name}]}
    exp = next(d for d in workloads(docs) if d["metadata"]["name"].endswith("export"))
    [container] = exp["spec"]["template"]["spec"]["containers"]
    assert env_of(container)["DICOM_ADAPTER_USE_GCP_APPLICATION_DEFAULT_CREDENTIALS"] == "true"
    # Both adapters serve the operations endpoint on the chart-wide metrics.port.
    assert env_of(container)["DICOM_ADAPTER_METRICS_PORT"] == "9464"
    assert exp["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9464"
    [service] = [s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("import")]
    assert service["spec"]["type"] == "ClusterIP"


def test_spool_uses_a_statefulset_and_networkpolicy_limits_dimse(chart: Any) -> None:
    docs = manifests(render(chart, load_values(CHART / "ci" / "spool-networkpolicy-values.yaml")))
    assert not by_kind(docs, "Deployment")
    [stateful] = by_kind(docs, "StatefulSet")
    [claim] = stateful["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "spool"
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert claim["spec"]["storageClassName"] == "premium-rwo"
    headless = next(s for s in by_kind(docs, "Service") if s["spec"].get("clusterIP") == "None")
    assert stateful["spec"]["serviceName"] == headless["metadata"]["name"]
    [container] = stateful["spec"]["template"]["spec"]["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "spool")
    assert mount["mountPath"] == "/var/spool/dicom-adapter"
    env = env_of(container)
    assert env["DICOM_ADAPTER_PERSISTENT_FILE_STORAGE_LOCATION"] == "/var/spool/dicom-adapter"
    assert env["DICOM_ADAPTER_AUTO_ACK_CSTORE"] == "true"
    assert env["DICOM_ADAPTER_SPOOL_MAX_SIZE_MB"] == "40000"
    assert "DICOM_ADAPTER_SPOOL_DIR" not in env  # the spool receives into its own layout
    assert not any(v["name"] == "spool" for v in stateful["spec"]["template"]["spec"]["volumes"])

    [policy] = by_kind(docs, "NetworkPolicy")
    dimse_rule, metrics_rule = policy["spec"]["ingress"]
    assert dimse_rule["ports"] == [{"port": "dimse", "protocol": "TCP"}]
    cidrs = [peer["ipBlock"]["cidr"] for peer in dimse_rule["from"] if "ipBlock" in peer]
    assert cidrs == ["10.20.0.0/16", "192.168.40.0/24"]
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    [lb] = [s for s in by_kind(docs, "Service") if s["spec"].get("type") == "LoadBalancer"]
    assert lb["spec"]["externalTrafficPolicy"] == "Local"  # keeps source IPs for the policy
    assert lb["spec"]["loadBalancerIP"] == "10.128.0.50"
    ref = next(e for e in container["env"] if e["name"] == "ENV_AETS_JSON")
    assert ref["valueFrom"]["configMapKeyRef"]["name"] == "existing-aets"


def test_auto_ack_alone_turns_the_durable_spool_on(chart: Any) -> None:
    values = {
        "import": {
            "dicomwebAddress": "https://healthcare.googleapis.com/v1/projects/p/locations/l/"
            "datasets/d/dicomStores/s/dicomWeb",
            "spool": {"autoAck": True, "uploadConcurrency": 48},
        }
    }
    docs = manifests(render(chart, values))
    assert not by_kind(docs, "Deployment")
    [stateful] = by_kind(docs, "StatefulSet")
    assert stateful["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "spool"
    [container] = stateful["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert env["DICOM_ADAPTER_PERSISTENT_FILE_STORAGE_LOCATION"] == "/var/spool/dicom-adapter"
    assert env["DICOM_ADAPTER_AUTO_ACK_CSTORE"] == "true"
    assert env["DICOM_ADAPTER_UPLOAD_CONCURRENCY"] == "48"


def test_notes_tell_how_to_find_the_address_and_send_an_image(chart: Any) -> None:
    notes = render(chart, load_values(CHART / "ci" / "import-only-values.yaml"))[
        "dicom-adapter/templates/NOTES.txt"]
    assert "kubectl get service rel-dicom-adapter-import --namespace imaging" in notes
    assert "{.status.loadBalancer.ingress[0].ip}" in notes
    assert "dcmsend -v -aec IMPORTADAPTER $ADAPTER_IP 2575" in notes
    assert "helm test rel" in notes


# -- bad values are refused at install time with a clear message -------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"import": {"aet": "WAY_TOO_LONG_AE_TITLE"}}, "at '/import/aet': maxLength"),
        ({"import": {"aet": "BAD\\AET"}}, "at '/import/aet'"),
        ({"import": {"dicomwebAddress": "healthcare.googleapis.com/v1"}},
         "at '/import/dicomwebAddress'"),
        ({"import": {"replica": 3}}, "additional properties 'replica' not allowed"),
        ({"import": {"service": {"port": 70000}}}, "at '/import/service/port': maximum"),
        ({"import": {"logFormat": "xml"}}, "at '/import/logFormat': value must be one of"),
        ({"import": {"networkPolicy": {"enabled": True}}},
         "at '/import/networkPolicy/dimseAllowedCidrs': minItems"),
        ({"import": {"networkPolicy": {"enabled": True, "dimseAllowedCidrs": ["10.0.0.1"]}}},
         "at '/import/networkPolicy/dimseAllowedCidrs/0'"),
        ({"import": {"auth": {"mode": "bearer"}}}, "at '/import/auth/bearerTokenSecret'"),
        ({"import": {"shutdownGrace": -1}}, "at '/import/shutdownGrace': minimum"),
        ({"metrics": {"port": 80}}, "at '/metrics/port': minimum"),
        ({"serviceAccount": {"gcpServiceAccount": "someone"}},
         "at '/serviceAccount/gcpServiceAccount'"),
        ({"export": {"enabled": True, "flowControl": {"workers": 0}}},
         "at '/export/flowControl/workers': minimum"),
        ({"import": {"dicomwebAddress": ""}}, "import.dicomwebAddress is required"),
        ({"import": {"enabled": False}}, "nothing to deploy: set import.enabled"),
        ({"import": {"shutdownGrace": 60, "terminationGracePeriodSeconds": 30}},
         "import.terminationGracePeriodSeconds (30) must be greater than"),
        ({"export": {"enabled": True, "subscriptionId": "sub-1",
                     "peer": {"dimse": {"aet": "PACS", "host": "pacs"}}}},
         "export.projectId is required"),
        ({"export": {"enabled": True, "projectId": "my-project", "subscriptionId": "sub-1"}},
         "export.peer: give peer.dimse.aet and peer.dimse.host"),
        ({"export": {"enabled": True, "projectId": "my-project", "subscriptionId": "sub-1",
                     "peer": {"dimse": {"aet": "PACS", "host": "pacs"},
                              "dicomweb": {"address": "https://store/dicom-web"}}}},
         "not both"),
        ({"import": {"autoscaling": {"enabled": True, "minReplicas": 0}}},
         "at '/import/autoscaling/minReplicas': minimum"),
        ({"import": {"autoscaling": {"enabled": True, "minReplicas": 4, "maxReplicas": 3}}},
         "import.autoscaling.maxReplicas (3) must be at least import.autoscaling.minReplicas (4)"),
        ({"import": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}}},
         "import.autoscaling: no metric to scale on"),
        ({"import": {"autoscaling": {"enabled": True}, "resources": {"requests": {"cpu": None}}}},
         "import.autoscaling.targetCPUUtilizationPercentage needs import.resources.requests.cpu"),
        ({"import": {"autoscaling": {"enabled": True, "openAssociations": {
            "enabled": True, "targetAverageValue": "lots"}}}},
         "at '/import/autoscaling/openAssociations/targetAverageValue'"),
        ({"import": {"autoscaling": {"behaviour": {}}}},
         "additional properties 'behaviour' not allowed"),
        ({"import": {"podDisruptionBudget": {"maxUnavailable": 2}}},
         "import.podDisruptionBudget.maxUnavailable (2) must be less than import.replicas (2)"),
        ({"import": {"autoscaling": {"enabled": True, "minReplicas": 3},
                     "podDisruptionBudget": {"maxUnavailable": 3}}},
         "must be less than import.autoscaling.minReplicas (3)"),
        ({"export": {"enabled": True, "projectId": "my-project", "subscriptionId": "sub~1",
                     "peer": {"dimse": {"aet": "PACS", "host": "pacs"}},
                     "autoscaling": {"enabled": True, "maxReplicas": 0}}},
         "at '/export/autoscaling/maxReplicas': minimum"),
        ({"export": {"enabled": True, "projectId": "my-project", "subscriptionId": "sub~1",
                     "peer": {"dimse": {"aet": "PACS", "host": "pacs"}},
                     "autoscaling": {"enabled": True, "pubsubBacklog": {"enabled": True}}}},
         "the subscription's id \"sub~1\" cannot be matched by a label selector"),
        ({"grafana": {"dashboard": {"enabled": "yes"}}},
         "at '/grafana/dashboard/enabled'"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(
    helm: Any, chart: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError) as caught:
        render(chart, merged(values))
    assert message in str(caught.value)


def test_defaults_need_only_the_store_address(helm: Any, chart: Any) -> None:
    with pytest.raises(helm.HelmError, match=r"import\.dicomwebAddress is required"):
        render(chart, None)
    docs = manifests(render(chart, merged({})))
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "ServiceAccount",
                                         "PodDisruptionBudget", "Pod"}
    # The default image is the one the repository's Dockerfile builds, tagged appVersion.
    [deployment] = by_kind(docs, "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"dicom-adapter:{chart.metadata['appVersion']}"


def test_export_metrics_switch_turns_probes_and_scraping_off(chart: Any) -> None:
    """On by default (the export adapter serves --metrics_port); off, nothing refers to it."""
    values = load_values(CHART / "ci" / "export-only-values.yaml")
    values["export"]["metrics"] = {"enabled": False}
    [deployment] = workloads(manifests(render(chart, values)))
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert "DICOM_ADAPTER_METRICS_PORT" not in env_of(container)
    assert "readinessProbe" not in container and "livenessProbe" not in container
    assert "ports" not in container
    assert "prometheus.io/scrape" not in pod["metadata"].get("annotations", {})


def test_notes_show_the_export_endpoints(chart: Any) -> None:
    notes = render(chart, load_values(CHART / "ci" / "export-only-values.yaml"))[
        "dicom-adapter/templates/NOTES.txt"]
    assert "deployment/rel-dicom-adapter-export 8080" in notes
    assert "dicomadapter_export_" in notes


def test_configmaps_are_accepted_by_the_adapters_loaders(chart: Any) -> None:
    """The AET dictionary and routing ConfigMaps parse with the adapter's own loaders."""
    from common.dimse.aet_dictionary import load_aet_dictionary
    from import_adapter.routing.config import load_destination_config

    aets_docs = manifests(render(chart, load_values(CHART / "ci" / "import-only-values.yaml")))
    [aets] = by_kind(aets_docs, "ConfigMap")
    load_aet_dictionary(path=None, inline=None,
                        environ={"ENV_AETS_JSON": aets["data"]["AETs.json"]})
    both_docs = manifests(render(chart, load_values(CHART / "ci" / "both-values.yaml")))
    [routes] = [c for c in by_kind(both_docs, "ConfigMap") if "destinations.json" in c["data"]]
    rules = load_destination_config(path=None, inline=None, environ={
        "ENV_DESTINATION_CONFIG_JSON": routes["data"]["destinations.json"]})
    assert len(rules) == 2


# -- autoscaling and disruption budgets ----------------------------------------------------------

EXPORT = {"enabled": True, "projectId": "my-project", "subscriptionId": "dicom-sub",
          "peer": {"dimse": {"aet": "PACS", "host": "10.10.0.5"}}}


def workload_named(docs: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    [workload] = [w for w in workloads(docs) if w["metadata"]["name"].endswith(suffix)]
    return workload


def hpas(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {h["metadata"]["name"]: h for h in by_kind(docs, "HorizontalPodAutoscaler")}


def pdbs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in by_kind(docs, "PodDisruptionBudget")}


def test_autoscaling_is_off_by_default_and_replicas_stay_fixed(chart: Any) -> None:
    docs = manifests(render(chart, merged({"export": EXPORT})))
    assert not hpas(docs)
    assert workload_named(docs, "-import")["spec"]["replicas"] == 2
    assert workload_named(docs, "-export")["spec"]["replicas"] == 1


@pytest.mark.parametrize(
    ("spool", "kind"),
    [({}, "Deployment"), ({"enabled": True}, "StatefulSet"), ({"autoAck": True}, "StatefulSet")],
    ids=["deployment", "spool", "auto-ack"],
)
def test_import_hpa_targets_the_workload_and_owns_its_replicas(
    chart: Any, spool: dict[str, Any], kind: str
) -> None:
    docs = manifests(render(chart, merged({"import": {
        "spool": spool, "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 7}}})))
    workload = workload_named(docs, "-import")
    assert workload["kind"] == kind
    assert "replicas" not in workload["spec"]  # the HPA owns the count
    [hpa] = hpas(docs).values()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": kind,
                                             "name": workload["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 7)
    # CPU only by default; the custom metric is off.
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
    # Conservative scale-down: a long stabilisation window, one pod at a time.
    down = hpa["spec"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 300
    assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]
    if kind == "StatefulSet":  # a scaled-away pod's queue stays on its claim
        assert workload["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"


def test_export_hpa_targets_the_deployment(chart: Any) -> None:
    values = merged({"export": {**EXPORT, "autoscaling": {
        "enabled": True, "minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 60,
        "pubsubBacklog": {"enabled": True, "targetAverageValue": 50}}}})
    docs = manifests(render(chart, values))
    deployment = workload_named(docs, "-export")
    assert "replicas" not in deployment["spec"]
    assert "replicas" in workload_named(docs, "-import")["spec"]  # its own switch
    hpa = hpas(docs)["rel-dicom-adapter-export"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "rel-dicom-adapter-export"}
    cpu, backlog = hpa["spec"]["metrics"]
    assert cpu["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    # A short subscription id: the project comes from export.projectId.
    assert backlog == {"type": "External", "external": {
        "metric": {"name": "pubsub.googleapis.com|subscription|num_undelivered_messages",
                   "selector": {"matchLabels": {
                       "resource.labels.project_id": "my-project",
                       "resource.labels.subscription_id": "dicom-sub"}}},
        "target": {"type": "AverageValue", "averageValue": "50"}}}
    assert hpa["spec"]["behavior"]["scaleDown"]["policies"][0]["value"] == 1


def test_autoscaling_scenario_scales_both_adapters_on_their_own_metrics(chart: Any) -> None:
    from common.metrics import ImportMetrics

    docs = manifests(render(chart, load_values(CHART / "ci" / "autoscaling-dashboard-values.yaml")))
    stateful = workload_named(docs, "-import")
    assert stateful["kind"] == "StatefulSet" and "replicas" not in stateful["spec"]
    assert "replicas" not in workload_named(docs, "-export")["spec"]
    found = hpas(docs)
    import_hpa = found["rel-dicom-adapter-import"]
    assert import_hpa["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    [pods_metric] = [m for m in import_hpa["spec"]["metrics"] if m["type"] == "Pods"]
    # The Pods metric is the gauge the import adapter exports (by default name).
    registry = new_metrics_registry()
    gauge = ImportMetrics(registry).open_associations
    [family] = gauge.collect()
    assert family.type == "gauge"
    assert pods_metric["pods"]["metric"]["name"] == family.name
    assert pods_metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "24"}
    [external] = [m for m in found["rel-dicom-adapter-export"]["spec"]["metrics"]
                  if m["type"] == "External"]
    # A full subscription path: project and id are taken from it.
    assert external["external"]["metric"]["selector"]["matchLabels"] == {
        "resource.labels.project_id": "my-project",
        "resource.labels.subscription_id": "dicom-notifications"}
    # Both PodDisruptionBudgets select their own pods, one pod at a time.
    budgets = pdbs(docs)
    for name in ("rel-dicom-adapter-import", "rel-dicom-adapter-export"):
        workload = next(w for w in workloads(docs) if w["metadata"]["name"] == name)
        assert budgets[name]["spec"] == {
            "maxUnavailable": 1, "selector": workload["spec"]["selector"]}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"import": {"replicas": 1}}, {}),
        ({"import": {"replicas": 2}}, {"import": 1}),
        ({"import": {"replicas": 4, "podDisruptionBudget": {"maxUnavailable": "25%"}}},
         {"import": "25%"}),
        ({"import": {"replicas": 3, "podDisruptionBudget": {"enabled": False}}}, {}),
        # With an HPA the budget is kept even at minReplicas 1: scaled out, it still limits
        # evictions to one pod at a time (and never blocks a drain: maxUnavailable only).
        ({"import": {"replicas": 1, "autoscaling": {"enabled": True, "minReplicas": 1}}},
         {"import": 1}),
        ({"export": {**EXPORT, "replicas": 1}}, {"import": 1}),
        ({"export": {**EXPORT, "replicas": 3}}, {"import": 1, "export": 1}),
        ({"export": {**EXPORT, "autoscaling": {"enabled": True}}}, {"import": 1, "export": 1}),
    ],
    ids=["import-1", "import-2", "import-percent", "import-off", "import-hpa-min-1",
         "export-1", "export-3", "export-hpa"],
)
def test_disruption_budgets_follow_the_replica_floor(
    chart: Any, values: dict[str, Any], expected: dict[str, Any]
) -> None:
    docs = manifests(render(chart, merged(values)))
    budgets = pdbs(docs)
    assert {name.rsplit("-", 1)[1]: pdb["spec"]["maxUnavailable"]
            for name, pdb in budgets.items()} == expected
    for pdb in budgets.values():
        assert "minAvailable" not in pdb["spec"]


# -- the Grafana dashboard -----------------------------------------------------------------------

#: PromQL words that are not metric names.
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                   "unless", "bool", "offset", "inf", "nan"}


def new_metrics_registry() -> Any:
    from common.metrics import new_registry

    return new_registry("test", "0")


def defined_sample_names() -> set[str]:
    """Every sample name the adapters can expose: both metric classes on fresh registries (with
    the process collector and dicomadapter_info), named as prometheus_client exposes each type
    (labelled metrics have no samples until first used, so their names follow from the type)."""
    from common.metrics import ExportMetrics, ImportMetrics

    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "info": ("_info",),
                "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("", "_sum", "_count", "_created")}
    names: set[str] = set()
    for metrics in (ImportMetrics, ExportMetrics):
        registry = new_metrics_registry()
        metrics(registry)
        for family in registry.collect():
            names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
            names |= {sample.name for sample in family.samples}
    return names


def vector_selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, label matchers) of each vector selector of a PromQL expression."""
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range durations ([5m], [$__rate_interval])
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    assert not re.search(r"(^|[^A-Za-z0-9_:\s])\s*\{", expr), f"a selector without a name: {expr}"
    selectors = []
    for match in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?(\s*\()?", expr):
        name, matchers, call = match.groups()
        if call or name in PROMQL_KEYWORDS:
            continue  # a function, aggregation or keyword
        selectors.append((name, matchers or ""))
    return selectors


def dashboard_targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(panel["title"], target) for panel in dashboard["panels"]
            for target in panel.get("targets", [])]


def test_the_chart_ships_the_documented_dashboard() -> None:
    assert CHART_DASHBOARD.read_bytes() == DASHBOARD.read_bytes(), (
        "cp docs/grafana/dicom-adapter.json charts/dicom-adapter/dashboards/")


def test_dashboard_queries_name_only_metrics_the_adapters_define() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    defined = defined_sample_names()
    used: set[str] = set()
    targets = dashboard_targets(dashboard)
    assert targets
    for title, target in targets:
        selectors = vector_selectors(target["expr"])
        assert selectors, f"{title}: no metric in {target['expr']}"
        for name, matchers in selectors:
            assert name in defined or name.startswith("process_"), f"{title}: unknown {name}"
            # Every query follows the namespace and pod variables.
            assert 'namespace="$namespace"' in matchers, f"{title}: {target['expr']}"
            assert 'pod=~"$pod"' in matchers, f"{title}: {target['expr']}"
            used.add(name)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            for name, _ in vector_selectors(variable["query"]["query"].removeprefix(
                    "label_values(").rsplit(",", 1)[0]):
                assert name in defined, f"variable {variable['name']}: unknown {name}"
    # What the operators asked to see is all there.
    assert {
        "dicomadapter_import_cstore_requests_total", "dicomadapter_import_cstore_errors_total",
        "dicomadapter_import_cstore_stow_seconds_bucket", "dicomadapter_import_dicomweb_retries_total",
        "dicomadapter_import_dicomweb_store_up", "dicomadapter_import_dicomweb_store_refused_total",
        "dicomadapter_import_spool_depth", "dicomadapter_import_spool_oldest_age_seconds",
        "dicomadapter_import_upload_concurrency", "dicomadapter_import_upload_pauses_total",
        "dicomadapter_import_open_associations", "dicomadapter_import_cfind_requests_total",
        "dicomadapter_import_cmove_requests_total", "dicomadapter_export_total_requests_total",
        "dicomadapter_export_total_errors_total", "dicomadapter_export_retries_total",
        "dicomadapter_export_dead_letters_total", "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    } <= used
    # Latency quantiles come from histogram buckets.
    for title, target in targets:
        if "histogram_quantile" in target["expr"]:
            assert all(n.endswith("_bucket") for n, _ in vector_selectors(target["expr"])), title


def test_dashboard_uses_the_datasource_namespace_and_pod_variables() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["type"] == variables["pod"]["type"] == "query"
    assert variables["pod"]["multi"] and variables["pod"]["includeAll"]
    assert variables["pod"]["allValue"] == ".*"
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == datasource, panel["title"]
        assert all(t["datasource"] == datasource for t in panel["targets"]), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    for name in ("namespace", "pod"):
        assert variables[name]["datasource"] == datasource


def test_dashboard_configmap_is_off_by_default_and_labelled_for_the_sidecar(chart: Any) -> None:
    def dashboards(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [c for c in by_kind(docs, "ConfigMap")
                if "grafana_dashboard" in c["metadata"]["labels"]]

    assert not dashboards(manifests(render(chart, merged({}))))
    docs = manifests(render(chart, merged({"grafana": {"dashboard": {
        "enabled": True, "namespace": "monitoring", "annotations": {"grafana_folder": "PACS"}}}})))
    [configmap] = dashboards(docs)
    assert configmap["metadata"]["name"] == "rel-dicom-adapter-dashboard"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "PACS"}
    assert json.loads(configmap["data"]["dicom-adapter.json"]) == json.loads(DASHBOARD.read_text())


def test_import_termination_grace_covers_the_spool_drain(helm: Any, chart: Any) -> None:
    """preStop + shutdownGrace + spool.drainTimeoutSeconds + 90 s, the 90 s being what the
    adapter's stop() may still take beyond them (kept in step with the code's own timeouts)."""
    import inspect

    from import_adapter.commitment.service import CommitmentSettings
    from import_adapter.server import DimseServer
    from import_adapter.spool.manager import SpoolManager

    def pod_spec(values: dict[str, Any]) -> dict[str, Any]:
        [workload] = workloads(manifests(render(chart, merged(values))))
        spec: dict[str, Any] = workload["spec"]["template"]["spec"]
        return spec

    in_flight = inspect.signature(DimseServer.stop).parameters["inflight_timeout"].default
    uploads = inspect.signature(SpoolManager.stop).parameters["timeout"].default
    after_drain = in_flight + CommitmentSettings().shutdown_window + uploads
    assert after_drain <= 90 - 5  # the chart's 90 s keep a margin of 5 s at least
    spec = pod_spec({})
    assert spec["terminationGracePeriodSeconds"] == 5 + 30 + 60 + 90
    assert env_of(spec["containers"][0])["DICOM_ADAPTER_SPOOL_DRAIN_TIMEOUT"] == "60"
    spec = pod_spec({"import": {"preStopSleepSeconds": 10, "shutdownGrace": 20.5,
                                "spool": {"autoAck": True, "drainTimeoutSeconds": 300}}})
    assert spec["terminationGracePeriodSeconds"] == 10 + 21 + 300 + 90
    assert env_of(spec["containers"][0])["DICOM_ADAPTER_SPOOL_DRAIN_TIMEOUT"] == "300"
    spec = pod_spec({"import": {"spool": {"drainTimeoutSeconds": 0}}})
    assert spec["terminationGracePeriodSeconds"] == 5 + 30 + 90
    # An explicit grace must leave room for the drain too.
    assert pod_spec({"import": {"terminationGracePeriodSeconds": 96}})[
        "terminationGracePeriodSeconds"] == 96
    with pytest.raises(helm.HelmError, match=r"\+ import\.spool\.drainTimeoutSeconds \(95\)"):
        pod_spec({"import": {"terminationGracePeriodSeconds": 95}})
    with pytest.raises(helm.HelmError, match=r"at '/import/spool/drainTimeoutSeconds': minimum"):
        pod_spec({"import": {"spool": {"drainTimeoutSeconds": -1}}})
