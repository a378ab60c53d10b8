"""The Helm chart: `helm lint` and `helm template` with the pinned helm, and checks on what it renders.

Needs the helm binary from tools/k8s/build.sh; without it these tests are skipped (failed when
RECON_REQUIRE_CLUSTER is set, as in CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster import binaries
from tests.conftest import REPO

CHART = REPO / "charts" / "recon-operator"
KUBE_VERSION = binaries.versions()["K8S_VERSION"].lstrip("v")
Manifest = dict[str, Any]


def helm_path() -> Path:
    path = binaries.bin_dir() / "helm"
    if not os.access(path, os.X_OK):
        message = f"helm not found at {path}: build it with tools/k8s/build.sh"
        if os.environ.get("RECON_REQUIRE_CLUSTER"):
            pytest.fail(message + " (RECON_REQUIRE_CLUSTER is set)", pytrace=False)
        pytest.skip(message)
    return path


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(helm_path()), *args], capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def render(*values: str, namespace: str = "recon-system") -> list[Manifest]:
    """`helm template` with `--set` values; the rendered objects (CRD included)."""
    sets = [arg for value in values for arg in ("--set", value)]
    out = helm(
        "template", "rel", str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION, "--include-crds", *sets
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[m['metadata']['name'] for m in found]}"
    return found[0]


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


AGGREGATE_LABELS = ("rbac.authorization.k8s.io/aggregate-to-edit", "rbac.authorization.k8s.io/aggregate-to-view")


def operator_roles(manifests: list[Manifest]) -> list[Manifest]:
    """The operator's own ClusterRoles: those not aggregated into the users' admin/edit/view roles."""
    return [
        role
        for role in of_kind(manifests, "ClusterRole")
        if not set(role["metadata"].get("labels", {})) & set(AGGREGATE_LABELS)
    ]


def pod_of(manifests: list[Manifest]) -> dict[str, Any]:
    pod: dict[str, Any] = one(manifests, "Deployment")["spec"]["template"]["spec"]
    return pod


# ---- helm itself ---------------------------------------------------------------------------------


def test_helm_lint_passes_strict() -> None:
    result = helm("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_helm_is_built_with_its_release_defaults() -> None:
    """Without --kube-version, helm checks kubeVersion against its built-in default: a `go install` helm
    says v1.20 and refuses the chart (>=1.30); tools/k8s/build.sh stamps it as helm's release builds do."""
    version = helm("version", "--template", "{{.Version}}").stdout.strip()
    assert version == binaries.versions()["HELM_VERSION"]
    out = helm("template", "rel", str(CHART)).stdout
    assert "kind: Deployment" in out


def test_values_schema_accepts_global_for_umbrella_charts() -> None:
    """A parent chart passes `global` to every subchart; the schema must let it through."""
    manifests = render("global.imageRegistry=registry.example", "global.anything.nested=1")
    assert one(manifests, "Deployment")


def test_values_schema_rejects_an_unknown_value() -> None:
    result = helm("template", "rel", str(CHART), "--kube-version", KUBE_VERSION, "--set", "image.tagg=1", check=False)
    assert result.returncode != 0
    assert "tagg" in result.stderr


def test_values_schema_rejects_a_wrong_type() -> None:
    args = ("template", "rel", str(CHART), "--kube-version", KUBE_VERSION, "--set", "worker.runAsUser=root")
    result = helm(*args, check=False)
    assert result.returncode != 0
    assert "runAsUser" in result.stderr


def test_every_value_in_values_yaml_is_in_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], props: dict[str, Any], path: str) -> None:
        for key, value in node.items():
            assert key in props["properties"], f"{path}{key} is not in values.schema.json"
            child = props["properties"][key]
            if isinstance(value, dict) and "properties" in child:
                walk(value, child, f"{path}{key}.")

    walk(values, schema, "")


def test_every_value_is_commented() -> None:
    """Each key of values.yaml has a comment above it, except inside free-form defaults (securityContext, ...)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    uncommented = []
    stack: list[tuple[int, dict[str, Any] | None]] = [(-1, schema)]  # (indent, schema node of that key)
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        key = stripped.split(":", 1)[0]
        structured = parent is not None and "properties" in parent
        node = parent["properties"].get(key) if structured and parent is not None else None
        stack.append((indent, node))
        is_block = stripped.endswith(":")
        if structured and not is_block and not lines[number - 1].strip().startswith("#"):
            uncommented.append(f"line {number + 1}: {stripped}")
    assert not uncommented, "values without a comment:\n" + "\n".join(uncommented)


# ---- what it installs ----------------------------------------------------------------------------


def test_crd_is_the_generated_copy_of_crds() -> None:
    sys.path.insert(0, str(REPO / "tools"))
    import generate

    files = generate.generated_files()
    chart_crd = CHART / "crds" / "recon.dev_reconstructionjobs.yaml"
    assert chart_crd in files, "tools/generate.py does not generate the chart's CRD copy"
    assert chart_crd.read_text() == files[chart_crd], "chart CRD is stale: run `make generate`"
    rendered = one(render(), "CustomResourceDefinition")
    assert rendered == yaml.safe_load((REPO / "crds" / "recon.dev_reconstructionjobs.yaml").read_text())


def test_default_install_renders_the_expected_objects() -> None:
    kinds = sorted(m["kind"] for m in render())
    assert kinds == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]


def test_deployment_is_one_replica_recreate_with_probe_and_metrics_port() -> None:
    deployment = one(render(), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = pod_of([deployment])["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9090, "health": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["image"] == "ghcr.io/recon-dev/recon-operator:0.1.0"
    assert "command" not in container  # the image's entrypoint, unless values.command is set


def test_operator_pod_meets_the_restricted_pod_security_standard() -> None:
    pod = pod_of(render())
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] != 0
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert not context.get("capabilities", {}).get("add")
        assert context.get("privileged", False) is False
        assert context["readOnlyRootFilesystem"] is True
    volume_kinds = {key for volume in pod["volumes"] for key in volume if key != "name"}
    assert volume_kinds <= {"emptyDir", "configMap", "secret", "projected", "downwardAPI"}


def test_rbac_has_no_wildcards_and_only_the_verbs_the_operator_uses() -> None:
    manifests = render()
    rules = [rule for role in operator_roles(manifests) for rule in role["rules"]]
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}: {rule}"
    granted = {
        (group, resource, verb)
        for r in rules
        for group in r["apiGroups"]
        for resource in r["resources"]
        for verb in r["verbs"]
    }
    assert ("", "secrets", "get") in granted
    assert not {g for g in granted if g[1] == "secrets" and g[2] != "get"}, "the operator only reads Secrets"
    assert not {g for g in granted if g[1] in ("pods", "nodes") and g[2] not in ("list", "watch")}
    assert ("batch", "jobs", "create") in granted
    assert ("recon.dev", "reconstructionjobs/status", "patch") in granted
    assert not {g for g in granted if g[2] in ("escalate", "bind", "impersonate")}
    binding = one(manifests, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rel-recon-operator", "namespace": "recon-system"}
    ]


def test_watch_namespaces_installs_a_role_per_namespace_and_only_read_only_cluster_rules() -> None:
    manifests = render("watchNamespaces={team-a,team-b}")
    roles = of_kind(manifests, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = of_kind(manifests, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for role in operator_roles(manifests):
        for rule in role["rules"]:
            assert set(rule["verbs"]) <= {"list", "watch"}, f"cluster-wide write in namespaced mode: {rule}"
            assert set(rule["resources"]) <= {"customresourcedefinitions", "namespaces"}
    config = one(manifests, "ConfigMap")["data"]
    assert config["RECON_OPERATOR_NAMESPACES"] == "team-a,team-b"


def test_configmap_is_read_by_the_operator_settings() -> None:
    """The ConfigMap's keys are exactly OperatorSettings fields, and parse to the chart's values."""
    from recon_operator.settings import OperatorSettings

    values = [
        "worker.image.tag=9.9",
        "worker.nodeSelector.gpu=h100",
        "worker.runtimeClassName=nvidia",
        "worker.s3.endpoint=http://minio.storage:9000",
        "worker.cpu=2",
        "worker.command={recon-worker,run}",
        "poses.memory=null",
        "poses.nodeSelector.pool=cpu",
        "operator.policy.allowedImagePrefixes={registry.example/recon/}",
        "operator.policy.allowedEndpoints={https://s3.example.com}",
        "operator.policy.allowFileURIs=true",
    ]
    data = one(render(*values), "ConfigMap")["data"]
    prefix = "RECON_OPERATOR_"
    fields = set(OperatorSettings.model_fields)
    unknown = [key for key in data if key.removeprefix(prefix).lower() not in fields]
    assert not unknown, f"ConfigMap keys the operator does not read: {unknown}"
    saved = dict(os.environ)
    try:
        os.environ.update(data)
        settings = OperatorSettings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert settings.worker_image == "ghcr.io/recon-dev/recon-worker:9.9"
    assert settings.worker_command == ("recon-worker", "run")
    assert settings.worker_node_selector == {"gpu": "h100"}
    assert settings.worker_tolerations == ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
    assert settings.worker_runtime_class_name == "nvidia"
    assert settings.s3_endpoint == "http://minio.storage:9000"
    assert settings.default_cpu == "2"
    assert settings.poses_command == ("recon-worker", "poses") and settings.poses_cpu == "2"
    assert settings.poses_memory is None and settings.poses_node_selector == {"pool": "cpu"}
    assert settings.poses_tolerations == ()
    assert settings.namespaces == ()
    assert settings.allowed_image_prefixes == ("registry.example/recon/",)
    assert settings.allowed_endpoints == ("https://s3.example.com",)
    assert settings.allow_file_uris is True and settings.allow_aws_endpoints is True
    assert settings.allowed_priority_classes == ("*",) and settings.allowed_toleration_keys == ("nvidia.com/gpu",)


def test_deployment_reads_the_configmap_and_rolls_when_it_changes() -> None:
    first = one(render(), "Deployment")
    container = first["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"][0] == {"configMapRef": {"name": "rel-recon-operator-worker-defaults"}}
    second = one(render("worker.image.tag=2.0"), "Deployment")
    checksum = "checksum/config"
    assert (
        first["spec"]["template"]["metadata"]["annotations"][checksum]
        != (second["spec"]["template"]["metadata"]["annotations"][checksum])
    )


def test_service_monitor_is_optional_and_needs_the_metrics_service() -> None:
    assert not of_kind(render(), "ServiceMonitor")
    monitor = one(render("metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    result = helm(
        "template", "rel", str(CHART), "--kube-version", KUBE_VERSION,
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "metrics.service.enabled" in result.stderr


def test_metrics_disabled_serves_none_and_exposes_no_port() -> None:
    manifests = render("metrics.enabled=false")
    assert not of_kind(manifests, "Service")
    container = pod_of(manifests)["containers"][0]
    assert [p["name"] for p in container["ports"]] == ["health"]
    assert one(manifests, "ConfigMap")["data"]["RECON_OPERATOR_METRICS_PORT"] == "null"


def test_local_node_values_set_the_console_script_and_existing_service_account() -> None:
    manifests = render("command={recon-operator}", "serviceAccount.create=false", "serviceAccount.name=ops")
    assert not of_kind(manifests, "ServiceAccount")
    pod = pod_of(manifests)
    assert pod["serviceAccountName"] == "ops"
    assert pod["containers"][0]["command"] == ["recon-operator"]
    assert one(manifests, "ClusterRoleBinding")["subjects"][0]["name"] == "ops"


def test_chart_app_version_matches_the_operator_and_worker_versions() -> None:
    import tomllib

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for project in ("operator", "worker"):
        version = tomllib.loads((REPO / project / "pyproject.toml").read_text())["project"]["version"]
        assert chart["appVersion"] == version, (
            f"{project}/pyproject.toml is {version}, Chart.yaml {chart['appVersion']}"
        )


def test_the_demo_and_e2e_values_pass_the_schema_and_reach_the_operator(tmp_path: Path) -> None:
    from localinstall import LocalPorts, local_node_values

    values = local_node_values("http://127.0.0.1:9999", LocalPorts(metrics=41001, health=41002))
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    out = helm("template", "rel", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(tmp_path / "values.yaml"))
    manifests = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    container = pod_of(manifests)["containers"][0]
    assert container["command"] == ["recon-operator"]
    assert {p["containerPort"] for p in container["ports"]} == {41001, 41002}
    data = one(manifests, "ConfigMap")["data"]
    assert data["RECON_OPERATOR_S3_ENDPOINT"] == "http://127.0.0.1:9999"
    assert json.loads(data["RECON_OPERATOR_WORKER_COMMAND"]) == ["recon-worker", "run"]
    assert data["RECON_OPERATOR_DEFAULT_CPU"] == "1"


# ---- what users compare it with (KubeRay, Kueue, Bitnami) ---------------------------------------


def test_readiness_probe_uses_the_health_endpoint_even_without_the_liveness_probe() -> None:
    container = pod_of(render())["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    container = pod_of(render("livenessProbe.enabled=false"))["containers"][0]
    assert "livenessProbe" not in container
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    assert {p["name"] for p in container["ports"]} == {"metrics", "health"}
    container = pod_of(render("readinessProbe.enabled=false"))["containers"][0]
    assert "readinessProbe" not in container


def test_aggregated_cluster_roles_let_namespace_editors_and_viewers_use_reconstruction_jobs() -> None:
    roles = {r["metadata"]["name"]: r for r in of_kind(render(), "ClusterRole")}
    edit, view = roles["rel-recon-operator-edit"], roles["rel-recon-operator-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"

    def grants(role: Manifest) -> set[tuple[str, str]]:
        return {(res, verb) for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"]}

    assert {("reconstructionjobs", v) for v in ("create", "delete", "patch", "update", "get", "list")} <= grants(edit)
    assert not {g for g in grants(edit) if g[0] == "reconstructionjobs/status" and g[1] != "get"}
    assert {verb for _, verb in grants(view)} == {"get", "list", "watch"}
    assert not of_kind(render("rbac.aggregateToDefaultRoles=false"), "ClusterRole")[1:]


def test_image_digest_pins_the_operator_and_worker_images() -> None:
    digest = "sha256:" + "ab" * 32
    manifests = render(f"image.digest={digest}", f"worker.image.digest={digest}", "image.tag=ignored")
    assert pod_of(manifests)["containers"][0]["image"] == f"ghcr.io/recon-dev/recon-operator@{digest}"
    assert one(manifests, "ConfigMap")["data"]["RECON_OPERATOR_WORKER_IMAGE"] == (
        f"ghcr.io/recon-dev/recon-worker@{digest}"
    )
    result = helm("template", "rel", str(CHART), "--set", "image.digest=latest", check=False)
    assert result.returncode != 0
    assert "digest" in result.stderr


def test_network_policy_is_optional_and_opens_dns_the_api_server_and_the_ports_it_serves() -> None:
    assert not of_kind(render(), "NetworkPolicy")
    policy = one(render("networkPolicy.enabled=true", "networkPolicy.allowExternalEgress=false"), "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["podSelector"]["matchLabels"] == one(render(), "Deployment")["spec"]["selector"]["matchLabels"]
    assert {p["port"] for rule in spec["ingress"] for p in rule["ports"]} == {"metrics", "health"}
    egress_ports = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule.get("ports", [])}
    assert {(53, "UDP"), (443, "TCP"), (6443, "TCP")} <= egress_ports
    assert {} not in spec["egress"], "allowExternalEgress=false still allows all egress"
    open_policy = one(render("networkPolicy.enabled=true"), "NetworkPolicy")
    assert {} in open_policy["spec"]["egress"]


def test_chart_readme_documents_every_value_and_is_up_to_date() -> None:
    sys.path.insert(0, str(REPO / "tools"))
    import generate

    readme = (CHART / "README.md").read_text()
    assert readme == generate.render_chart_readme(readme, (CHART / "values.yaml").read_text()), (
        "charts/recon-operator/README.md is stale: run `make generate`"
    )
    documented = {key for key, _, _ in generate.values_rows((CHART / "values.yaml").read_text())}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    def leaves(node: dict[str, Any], props: dict[str, Any], path: str) -> set[str]:
        """Keys that are values of their own (not sections whose children are documented)."""
        found = set()
        for key, value in node.items():
            child = props["properties"][key]
            if isinstance(value, dict) and child.get("additionalProperties") is False and "properties" in child:
                found |= leaves(value, child, f"{path}{key}.")
            else:
                found.add(f"{path}{key}")
        return found

    missing = leaves(values, schema, "") - documented
    assert not missing, f"values without a row in the chart README: {sorted(missing)}"
    assert "Secrets in every namespace" in readme, "the README must say what the cluster-wide mode grants"


def test_kueue_enabled_watches_workloads_with_read_only_rights() -> None:
    """kueue.enabled: the operator reads Workloads (setting + get/list/watch), and only then."""
    from recon_operator.settings import OperatorSettings

    def workload_verbs(manifests: list[Manifest]) -> set[str]:
        roles = of_kind(manifests, "ClusterRole") + of_kind(manifests, "Role")
        return {
            verb
            for role in roles
            for rule in role["rules"]
            if "kueue.x-k8s.io" in rule["apiGroups"] and "workloads" in rule["resources"]
            for verb in rule["verbs"]
        }

    default = render()
    assert one(default, "ConfigMap")["data"]["RECON_OPERATOR_KUEUE_WORKLOADS"] == "false"
    assert workload_verbs(default) == set()
    for values in (("kueue.enabled=true",), ("kueue.enabled=true", "watchNamespaces={team-a}")):
        manifests = render(*values)
        data = one(manifests, "ConfigMap")["data"]
        assert OperatorSettings.model_validate(
            {"kueue_workloads": data["RECON_OPERATOR_KUEUE_WORKLOADS"]}
        ).kueue_workloads
        assert workload_verbs(manifests) == {"get", "list", "watch"}
