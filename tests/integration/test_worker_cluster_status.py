"""The worker on the local control plane: it patches its own ReconstructionJob's status with its per-job
identity (the operator's ServiceAccount + Role for that one resource name) and is refused any other CR's.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localcluster.kube import raw, wait_for
from recon_operator.identity import build_identity
from tests.conftest import REPO
from tests.s3server import TEST_CREDENTIALS, S3Server
from tests.unit.worker.captures import upload_folder, write_capture

pytestmark = pytest.mark.cluster

GROUP, VERSION, PLURAL = "recon.dev", "v1alpha1", "reconstructionjobs"


def reconstruction_job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ReconstructionJob",
        "metadata": {"name": name},
        "spec": {
            "input": {"uri": f"s3://captures/{name}/"},
            "output": {"uri": f"s3://results/{name}/"},
            "quality": {"preset": "draft"},
            "resources": {"gpus": 0},
        },
    }


def apply_identity(api: client.ApiClient, owner: dict[str, Any]) -> str:
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    namespace = owner["metadata"]["namespace"]
    create = {
        "ServiceAccount": core.create_namespaced_service_account,
        "Role": rbac.create_namespaced_role,
        "RoleBinding": rbac.create_namespaced_role_binding,
    }
    objects = build_identity(owner)
    for obj in objects:
        raw(create[obj["kind"]], namespace, obj)
    return str(objects[0]["metadata"]["name"])


def pod(name: str, account: str, command: list[str], env: dict[str, str]) -> dict[str, Any]:
    variables: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in env.items()]
    variables += [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    container = {"name": "worker", "image": "local/recon-worker", "command": command, "env": variables}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "serviceAccountName": account, "containers": [container]},
    }


def finished(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        found = raw(core.read_namespaced_pod, name, namespace)
        return found if found.get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    state: dict[str, Any] = wait_for(f"pod {name} to finish", done, 180)["status"]["containerStatuses"][0]["state"]
    return dict(state["terminated"])


def test_worker_patches_its_own_status_and_is_refused_another(
    namespace: str, api: client.ApiClient, core: client.CoreV1Api, s3: S3Server, tmp_path: Path
) -> None:
    crs = client.CustomObjectsApi(api)
    ball = raw(crs.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, reconstruction_job("ball"))
    raw(crs.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, reconstruction_job("other"))
    # The operator's fields, set as the operator would: the worker must leave them alone.
    crs.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "ball", {"status": {"phase": "Running", "attempts": 1}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    account = apply_identity(api, ball)

    s3_client = s3.client()
    s3_client.create_bucket(Bucket="captures")
    s3_client.create_bucket(Bucket="results")
    upload_folder(s3_client, write_capture(tmp_path / "capture", views=8, size=24), "captures", "ball/")
    task = {
        "apiVersion": "recon.dev/v1alpha1",
        "job": {"namespace": namespace, "name": "ball", "uid": ball["metadata"]["uid"]},
        "input": {"uri": "s3://captures/ball/"},
        "output": {"uri": "s3://results/ball/"},
        "storage": {"endpoint": s3.endpoint},
        "quality": {"preset": "draft", "refinement": {"iterations": 2}},
        "compute": {"gpus": 0},
    }
    env = {
        **TEST_CREDENTIALS,
        "PYTHONPATH": str(REPO),
        "RECON_TASK": json.dumps(task),
        "RECON_ENGINE": "tests.unit.worker.standin_engine",
    }
    worker = pod("ball-worker-1", account, [sys.executable, "-m", "recon_worker.cli", "run"], env)
    raw(core.create_namespaced_pod, namespace, worker)
    state = finished(core, namespace, "ball-worker-1")
    assert state["exitCode"] == 0, state
    assert json.loads(state["message"])["reason"] == "Succeeded"

    status = raw(crs.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, "ball")["status"]
    assert (status["phase"], status["attempts"]) == ("Running", 1)  # untouched
    assert (status["progress"], status["stage"]) == (100, "publish")
    assert status["worker"] == {"pod": "ball-worker-1", "node": "local-node", "gpu": "cpu", "renderer": "pytorch3d"}
    assert status["metrics"]["watertight"] is True and status["metrics"]["faces"] > 0
    assert "outputs" not in status  # the operator's, from the verified manifest (no operator runs here)

    # The same identity may read its own CR's status but not patch another CR's.
    probe = textwrap.dedent(
        f"""
        import json, os
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException
        config.load_kube_config()
        api = client.CustomObjectsApi()
        def code(call):
            try:
                call()
                return 200
            except ApiException as err:
                return err.status
        body = {{"status": {{"progress": 1}}}}
        args = ("{GROUP}", "{VERSION}", "{namespace}", "{PLURAL}")
        result = {{
            "get_own": code(lambda: api.get_namespaced_custom_object_status(*args, "ball")),
            "patch_other": code(lambda: api.patch_namespaced_custom_object_status(
                *args, "other", body, _content_type="application/merge-patch+json")),
            "patch_own_spec": code(lambda: api.patch_namespaced_custom_object(
                *args, "ball", {{"spec": {{"suspend": True}}}}, _content_type="application/merge-patch+json")),
        }}
        with open(os.environ["RECON_TERMINATION_MESSAGE_PATH"], "w") as f:
            json.dump(result, f)
        """
    )
    raw(core.create_namespaced_pod, namespace, pod("ball-probe", account, [sys.executable, "-c", probe], {}))
    state = finished(core, namespace, "ball-probe")
    assert state["exitCode"] == 0, state
    assert json.loads(state["message"]) == {"get_own": 200, "patch_other": 403, "patch_own_spec": 403}
    other = raw(crs.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, "other")
    assert "progress" not in other.get("status", {})
