"""The local Kubernetes control plane for integration tests (tools/localcluster).

`cluster` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and one node agent once
per session in a temporary folder; `namespace` gives each test its own namespace. When a test fails,
the last lines of every component's log are attached to its report.

Without the binaries (tools/k8s/build.sh) the cluster tests are skipped, unless RECON_REQUIRE_CLUSTER
is set (CI sets it): then they fail.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import Cluster, ClusterConfig, NodeConfig, binaries
from localcluster.kube import raw, wait_service_account
from tests.s3server import TEST_CREDENTIALS, S3Server

CLUSTER_KEY = pytest.StashKey[Cluster]()
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = binaries.missing()
    if missing:
        message = (
            f"local cluster binaries missing ({', '.join(missing)} in {binaries.bin_dir()}); "
            "build them with tools/k8s/build.sh"
        )
        if os.environ.get("RECON_REQUIRE_CLUSTER"):
            pytest.fail(message + " (RECON_REQUIRE_CLUSTER is set)", pytrace=False)
        pytest.skip(message)
    # A short state path: unix socket paths and log names stay readable.
    state_dir = tmp_path_factory.mktemp("cluster")
    local = Cluster(ClusterConfig(state_dir=state_dir, nodes=[NodeConfig(name="local-node", gpus=1)]))
    request.config.stash[CLUSTER_KEY] = local
    try:
        local.up()
    except Exception as err:
        pytest.fail(f"local cluster did not start: {err}\n{local.diagnostics()}", pytrace=False)
    yield local
    local.down()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    local = item.config.stash.get(CLUSTER_KEY, None)
    if report.failed and local is not None:
        report.sections.append(("local cluster logs", local.diagnostics()))


@pytest.fixture(scope="session")
def api(cluster: Cluster) -> client.ApiClient:
    api_client: client.ApiClient = cluster.api_client()
    return api_client


@pytest.fixture(scope="session")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="session")
def batch(api: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api)


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


@pytest.fixture(scope="session")
def kubectl(cluster: Cluster) -> Kubectl:
    """kubectl (from the venv) against the cluster: kubectl("get", "pods", "-n", ns, input=None, check=True)."""
    executable = binaries.kubectl()
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}

    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([executable, *args], input=input, capture_output=True, text=True, env=env, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    return run


@pytest.fixture
def namespace(request: pytest.FixtureRequest, api: client.ApiClient, core: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace named after the test, deleted afterwards (its objects go with it)."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:50].strip("-")
    name = f"{base}-{secrets.token_hex(3)}"
    raw(core.create_namespace, {"metadata": {"name": name}})
    # Pods are refused until the ServiceAccount controller has made the namespace's `default` account.
    wait_service_account(api, name, "default", timeout=60)
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as err:
        if err.status != 404:
            raise


@pytest.fixture
def buckets(s3: S3Server, namespace: str, core: client.CoreV1Api) -> S3Server:
    """Buckets `captures` and `results`, and the credentials Secret `s3` in the test's namespace that jobs
    name (`--credentials-secret`, `spec.storage.credentialsSecret`)."""
    s3.client().create_bucket(Bucket="captures")
    s3.client().create_bucket(Bucket="results")
    creds = {k: v for k, v in TEST_CREDENTIALS.items() if k != "AWS_DEFAULT_REGION"}
    raw(core.create_namespaced_secret, namespace, {"metadata": {"name": "s3"}, "stringData": creds})
    return s3
