"""The local control plane and its node agent, end to end: real apiserver, controllers and processes."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import Cluster, binaries
from localcluster.kube import raw, wait_for, wait_job_finished
from recon_worker.status import metrics_patch

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable  # pods run on this host: the venv's interpreter is their "image"


def python_container(script: str, name: str = "main", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "local/python", "command": [PYTHON, "-c", textwrap.dedent(script)], **extra}


def job(name: str, container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    pod_spec = {"restartPolicy": "Never", "containers": [container], **spec.pop("pod", {})}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": pod_spec}, **spec},
    }


def bare_pod(name: str, container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def job_pods(core: client.CoreV1Api, namespace: str, job_name: str) -> list[dict[str, Any]]:
    return list(raw(core.list_namespaced_pod, namespace, label_selector=f"job-name={job_name}")["items"])


def wait_pod_phase(core: client.CoreV1Api, namespace: str, name: str, phases: tuple[str, ...]) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        pod = raw(core.read_namespaced_pod, name, namespace)
        return pod if pod.get("status", {}).get("phase") in phases else None

    pod: dict[str, Any] = wait_for(f"pod {namespace}/{name} to be {'/'.join(phases)}", reached, 90)
    return pod


def terminated(pod: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    return state


# ---- control plane --------------------------------------------------------------------------------


def test_server_is_the_pinned_kubernetes_version(kubectl: Any) -> None:
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == binaries.versions()["K8S_VERSION"]


def test_node_agent_registers_a_ready_node_with_gpu_capacity_and_lease(
    core: client.CoreV1Api, api: client.ApiClient
) -> None:
    node = raw(core.read_node, "local-node")
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert node["status"]["allocatable"]["cpu"] == "2"
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    lease = raw(client.CoordinationV1Api(api).read_namespaced_lease, "local-node", "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == "local-node"


def test_state_folder_holds_kubeconfig_and_component_logs(cluster: Cluster) -> None:
    assert cluster.kubeconfig.is_file()
    logs = {p.stem for p in cluster.logs_dir.glob("*.log")}
    assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "node-local-node"} <= logs
    assert all(cluster.status().values()), cluster.status()


# ---- batch/v1 Jobs on the node agent ---------------------------------------------------------------


def test_job_runs_its_command_as_a_local_process_and_completes(
    namespace: str, api: client.ApiClient, batch: client.BatchV1Api, core: client.CoreV1Api, kubectl: Any
) -> None:
    script = """
        import os, pathlib
        pathlib.Path(os.environ["RECON_TERMINATION_MESSAGE_PATH"]).write_text("pid %d" % os.getpid())
        print("hello from", os.environ["HOSTNAME"])
    """
    container = python_container(script)
    container["command"][0] = "python"  # a bare name: the venv's bin/ leads the pod's PATH
    raw(batch.create_namespaced_job, namespace, job("hello", container))
    finished = wait_job_finished(api, namespace, "hello")
    assert finished["status"].get("succeeded") == 1, finished["status"]
    (pod,) = job_pods(core, namespace, "hello")
    status = pod["status"]
    assert status["phase"] == "Succeeded"
    assert status["podIP"] == "127.0.0.1" and status["startTime"]
    state = terminated(pod)
    assert state["exitCode"] == 0 and state["reason"] == "Completed"
    assert state["message"].startswith("pid ")
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["PodScheduled"] == "True" and conditions["Initialized"] == "True"
    assert conditions["Ready"] == "False" and conditions["ContainersReady"] == "False"  # completed pods
    # kubectl logs: apiserver -> the node agent's log endpoint.
    assert kubectl("logs", "job/hello", "-n", namespace).stdout == f"hello from {pod['metadata']['name']}\n"


def test_failing_job_reports_exit_code_and_termination_message(
    namespace: str, api: client.ApiClient, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    script = """
        import json, os, sys
        with open(os.environ["RECON_TERMINATION_MESSAGE_PATH"], "w") as f:
            json.dump({"reason": "InsufficientGPUMemory", "message": "needs 16 GiB"}, f)
        sys.exit(3)
    """
    # podFailurePolicy reads the exit code from the container status the node agent reports.
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3]}}]}
    manifest = job("exit3", python_container(script), backoffLimit=2, podFailurePolicy=policy)
    raw(batch.create_namespaced_job, namespace, manifest)
    finished = wait_job_finished(api, namespace, "exit3")
    failed = next(c for c in finished["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodFailurePolicy", failed
    (pod,) = job_pods(core, namespace, "exit3")
    assert pod["status"]["phase"] == "Failed"
    state = terminated(pod)
    assert state["exitCode"] == 3 and state["reason"] == "Error"
    assert json.loads(state["message"]) == {"reason": "InsufficientGPUMemory", "message": "needs 16 GiB"}


def test_termination_message_falls_back_to_log_tail_on_error(namespace: str, core: client.CoreV1Api) -> None:
    script = """
        import sys
        print("first line")
        print("boom: the capture has no frames", file=sys.stderr)
        sys.exit(1)
    """
    container = python_container(script, terminationMessagePolicy="FallbackToLogsOnError")
    raw(core.create_namespaced_pod, namespace, bare_pod("fallback", container))
    pod = wait_pod_phase(core, namespace, "fallback", ("Failed",))
    assert "boom: the capture has no frames" in terminated(pod)["message"]


def test_on_failure_restarts_the_container_until_it_succeeds(namespace: str, core: client.CoreV1Api) -> None:
    # The first run leaves a marker in the pod's emptyDir (it outlives restarts) and fails.
    script = """
        import os, sys
        marker = os.path.join(os.environ["RECON_VOLUME_STATE"], "tried")
        if not os.path.exists(marker):
            open(marker, "w").close()
            sys.exit(7)
    """
    container = python_container(script, volumeMounts=[{"name": "state", "mountPath": "/state"}])
    pod = bare_pod("retry", container, restartPolicy="OnFailure", volumes=[{"name": "state", "emptyDir": {}}])
    raw(core.create_namespaced_pod, namespace, pod)
    done = wait_pod_phase(core, namespace, "retry", ("Succeeded", "Failed"))
    status = done["status"]["containerStatuses"][0]
    assert done["status"]["phase"] == "Succeeded"
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 7


def test_missing_command_fails_with_start_error(namespace: str, core: client.CoreV1Api) -> None:
    container = {"name": "main", "image": "busybox", "command": ["/nonexistent/recon-tool", "--help"]}
    raw(core.create_namespaced_pod, namespace, bare_pod("nocommand", container))
    pod = wait_pod_phase(core, namespace, "nocommand", ("Failed",))
    state = terminated(pod)
    assert state["reason"] == "StartError" and state["exitCode"] == 128
    assert "/nonexistent/recon-tool" in state["message"] and "not found" in state["message"]


def test_environment_volumes_and_gpus_reach_the_process(namespace: str, core: client.CoreV1Api) -> None:
    raw(core.create_namespaced_secret, namespace, {"metadata": {"name": "creds"}, "stringData": {"KEY": "s3cr3t"}})
    raw(core.create_namespaced_config_map, namespace, {"metadata": {"name": "settings"}, "data": {"PRESET": "draft"}})
    script = """
        import json, os, pathlib, sys
        out = sys.argv[1].split("=", 1)[1]
        pathlib.Path(out).write_text("mesh")
        seen = {k: os.environ.get(k) for k in ("SECRET_KEY", "CFG_PRESET", "POD", "NS", "NODE", "IP", "GREETING",
                                               "CUDA_VISIBLE_DEVICES")}
        seen["out"] = out
        seen["out_exists"] = pathlib.Path(os.environ["RECON_VOLUME_SCRATCH"], "mesh.glb").read_text()
        seen["kubeconfig"] = os.path.isfile(os.environ["KUBECONFIG"])
        seen["cwd"] = os.getcwd()
        pathlib.Path(os.environ["RECON_TERMINATION_MESSAGE_PATH"]).write_text(json.dumps(seen))
    """

    def field(path: str) -> dict[str, Any]:
        return {"valueFrom": {"fieldRef": {"fieldPath": path}}}

    container = python_container(
        script,
        args=["--out=/scratch/mesh.glb"],
        workingDir="/scratch",
        env=[
            {"name": "SECRET_KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "KEY"}}},
            {"name": "POD", **field("metadata.name")},
            {"name": "NS", **field("metadata.namespace")},
            {"name": "NODE", **field("spec.nodeName")},
            {"name": "IP", **field("status.podIP")},
            {"name": "GREETING", "value": "preset $(CFG_PRESET) on $(NODE)"},
        ],
        envFrom=[{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
        volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
        resources={"limits": {"nvidia.com/gpu": "1"}},
    )
    pod = bare_pod("env", container, volumes=[{"name": "scratch", "emptyDir": {}}])
    raw(core.create_namespaced_pod, namespace, pod)
    done = wait_pod_phase(core, namespace, "env", ("Succeeded", "Failed"))
    state = terminated(done)
    assert state["exitCode"] == 0, state
    seen = json.loads(state["message"])
    assert seen["SECRET_KEY"] == "s3cr3t" and seen["CFG_PRESET"] == "draft"
    assert seen["POD"] == "env" and seen["NS"] == namespace and seen["NODE"] == "local-node"
    assert seen["IP"] == "127.0.0.1"
    assert seen["GREETING"] == "preset draft on local-node"
    assert seen["CUDA_VISIBLE_DEVICES"] == "0"
    assert seen["out_exists"] == "mesh" and seen["kubeconfig"] is True
    assert not seen["out"].startswith("/scratch") and seen["cwd"] == str(Path(seen["out"]).parent)


def test_mount_covering_the_agents_paths_leaves_its_own_variables_alone(
    namespace: str, core: client.CoreV1Api, cluster: Cluster
) -> None:
    # The pod's identity lives in the cluster's state folder; an emptyDir mounted over a parent of it (the
    # chart mounts one at /tmp) must not redirect the agent's KUBECONFIG into the volume.
    cover = "/" + cluster.kubeconfig.resolve().parts[1]
    script = """
        import os, pathlib
        mine_in_volume = os.environ["MINE"].startswith(os.environ["RECON_VOLUME_COVER"])
        message = f"{os.path.isfile(os.environ['KUBECONFIG'])} {mine_in_volume}"
        pathlib.Path(os.environ["RECON_TERMINATION_MESSAGE_PATH"]).write_text(message)
    """
    container = python_container(
        script, env=[{"name": "MINE", "value": f"{cover}/x"}], volumeMounts=[{"name": "cover", "mountPath": cover}]
    )
    # By name, from the venv the agent puts first on PATH: the venv itself may live under the mount too.
    container["command"][0] = "python"
    raw(
        core.create_namespaced_pod, namespace, bare_pod("cover", container, volumes=[{"name": "cover", "emptyDir": {}}])
    )
    state = terminated(wait_pod_phase(core, namespace, "cover", ("Succeeded", "Failed")))
    assert (state["exitCode"], state["message"]) == (0, "True True"), state


def test_missing_secret_keeps_pod_pending_with_config_error(namespace: str, core: client.CoreV1Api) -> None:
    env = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]
    raw(core.create_namespaced_pod, namespace, bare_pod("noconfig", python_container("pass", env=env)))

    def waiting_reason() -> dict[str, Any] | None:
        pod = raw(core.read_namespaced_pod, "noconfig", namespace)
        statuses = pod.get("status", {}).get("containerStatuses") or []
        waiting = statuses[0]["state"].get("waiting") if statuses else None
        return waiting if waiting and waiting.get("reason") != "ContainerCreating" else None

    waiting = wait_for("CreateContainerConfigError", waiting_reason, 60)
    assert waiting["reason"] == "CreateContainerConfigError" and "absent" in waiting["message"]
    assert raw(core.read_namespaced_pod, "noconfig", namespace)["status"]["phase"] == "Pending"


def test_deleting_a_running_pod_kills_its_process_group(namespace: str, core: client.CoreV1Api, tmp_path: Path) -> None:
    # The process ignores SIGTERM and has a child: only SIGKILL after the grace period ends both.
    script = """
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(os.environ["PID_FILE"] + ".tmp", "w") as f:
            f.write("%d %d" % (os.getpid(), child.pid))
        os.rename(os.environ["PID_FILE"] + ".tmp", os.environ["PID_FILE"])
        time.sleep(600)
    """
    pid_file = tmp_path / "pids"
    container = python_container(script, env=[{"name": "PID_FILE", "value": str(pid_file)}])
    raw(core.create_namespaced_pod, namespace, bare_pod("sleeper", container, terminationGracePeriodSeconds=2))
    wait_pod_phase(core, namespace, "sleeper", ("Running",))
    wait_for("the pod's process to write its pid", pid_file.exists, 30)
    pids = [int(p) for p in pid_file.read_text().split()]
    assert all(_alive(pid) for pid in pids)

    started = time.monotonic()
    core.delete_namespaced_pod("sleeper", namespace)

    def pod_gone() -> bool:
        try:
            core.read_namespaced_pod("sleeper", namespace)
            return False
        except ApiException as err:
            return bool(err.status == 404)

    wait_for("pod sleeper to be removed", pod_gone, 60)
    assert time.monotonic() - started >= 1.5, "SIGKILL came before the grace period ended"
    wait_for("the pod's processes to exit", lambda: not any(_alive(pid) for pid in pids), 10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by the agent) counts as gone.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] != "Z"


def test_pod_service_account_gets_exactly_its_role(
    namespace: str, api: client.ApiClient, core: client.CoreV1Api
) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    raw(core.create_namespaced_service_account, namespace, {"metadata": {"name": "reader"}})
    raw(core.create_namespaced_config_map, namespace, {"metadata": {"name": "visible"}, "data": {"a": "1"}})
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}
    raw(rbac.create_namespaced_role, namespace, {"metadata": {"name": "read-configmaps"}, "rules": [rule]})
    raw(
        rbac.create_namespaced_role_binding,
        namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    script = """
        import json, os, sys
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException
        config.load_kube_config()  # KUBECONFIG from the node agent: the pod's bound token
        core = client.CoreV1Api()
        ns = os.environ["NS"]
        result = {"configmaps": [c.metadata.name for c in core.list_namespaced_config_map(ns).items]}
        def status_of(call):
            try:
                call()
                return 200
            except ApiException as err:
                return err.status
        result["list_secrets"] = status_of(lambda: core.list_namespaced_secret(ns))
        result["create_configmap"] = status_of(
            lambda: core.create_namespaced_config_map(ns, {"metadata": {"name": "nope"}}))
        review = client.AuthenticationV1Api().create_self_subject_review({})
        result["user"] = review.status.user_info.username
        result["extra"] = review.status.user_info.extra or {}
        with open(os.environ["RECON_TERMINATION_MESSAGE_PATH"], "w") as f:
            json.dump(result, f)
    """
    env = [{"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
    pod = bare_pod("rbac", python_container(script, env=env), serviceAccountName="reader")
    raw(core.create_namespaced_pod, namespace, pod)
    done = wait_pod_phase(core, namespace, "rbac", ("Succeeded", "Failed"))
    state = terminated(done)
    assert state["exitCode"] == 0, state
    result = json.loads(state["message"])
    assert "visible" in result["configmaps"]
    assert result["list_secrets"] == 403 and result["create_configmap"] == 403
    assert result["user"] == f"system:serviceaccount:{namespace}:reader"
    assert result["extra"]["authentication.kubernetes.io/pod-name"] == ["rbac"]


# ---- controllers ----------------------------------------------------------------------------------


def test_garbage_collector_deletes_dependents_of_a_deleted_owner(namespace: str, core: client.CoreV1Api) -> None:
    owner = raw(core.create_namespaced_config_map, namespace, {"metadata": {"name": "owner"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    raw(core.create_namespaced_secret, namespace, {"metadata": {"name": "dependent", "ownerReferences": [reference]}})
    core.delete_namespaced_config_map("owner", namespace)

    def dependent_gone() -> bool:
        try:
            core.read_namespaced_secret("dependent", namespace)
            return False
        except ApiException as err:
            return bool(err.status == 404)

    wait_for("the garbage collector to delete the dependent Secret", dependent_gone, 60)


def test_finished_job_is_removed_after_its_ttl(
    namespace: str, api: client.ApiClient, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    raw(batch.create_namespaced_job, namespace, job("short", python_container("pass"), ttlSecondsAfterFinished=0))

    def job_and_pods_gone() -> bool:
        jobs = raw(batch.list_namespaced_job, namespace)["items"]
        return not jobs and not job_pods(core, namespace, "short")

    wait_for("ttl-after-finished and the garbage collector to remove the Job and its pod", job_and_pods_gone, 90)


# ---- the ReconstructionJob API -----------------------------------------------------------------------


def test_crd_is_established(api: client.ApiClient) -> None:
    crd = raw(client.ApiextensionsV1Api(api).read_custom_resource_definition, "reconstructionjobs.recon.dev")
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"


EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_accepted_by_the_apiserver(example: Path, namespace: str, kubectl: Any) -> None:
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    for doc in docs:
        if doc["kind"] == "ReconstructionJob":
            kubectl("get", "reconstructionjob", doc["metadata"]["name"], "-n", namespace)


def minimal_rj(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "recon.dev/v1alpha1",
        "kind": "ReconstructionJob",
        "metadata": {"name": name},
        "spec": {"input": {"uri": "s3://captures/spot/"}, "output": {"uri": "s3://meshes/spot/"}, **spec},
    }


@pytest.mark.parametrize(
    ("field", "patch", "message"),
    [
        ("input", {"input": {"uri": "s3://captures/other/"}}, "spec.input is immutable"),
        ("output", {"output": {"uri": "s3://meshes/other/"}}, "spec.output is immutable"),
    ],
)
def test_input_and_output_are_immutable(
    field: str, patch: dict[str, Any], message: str, namespace: str, kubectl: Any
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(minimal_rj("spot")))
    result = kubectl(
        "patch", "rj", "spot", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": patch}), check=False
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"input": {"uri": "http://captures/spot/"}}, "spec.input.uri must be s3://bucket/prefix/"),
        ({"output": {"uri": "ftp://meshes/spot/"}}, "spec.output.uri must be s3://bucket/prefix/"),
        ({"output": {"uri": "s3://captures/spot/mesh/"}}, "neither may lie inside the other"),
        ({"resources": {"gpus": -1}}, "spec.resources.gpus: Invalid value: -1"),
        # Issue 11 point 4: accepted before, and results were published into the input capture.
        ({"output": {"uri": "s3://captures//spot/out/"}}, "without empty ('//') segments"),
        ({"output": {"uri": "s3://captures/spot#/"}}, "'#', '?' or control characters"),
        ({"output": {"uri": "s3://captures/spot?/"}}, "'#', '?' or control characters"),
        ({"output": {"uri": "s3://captures/spot/\x07/"}}, "'#', '?' or control characters"),
        ({"output": {"uri": "s3://captures/x/../spot/out/"}}, "must not hold '.' or '..' segments"),
        ({"input": {"uri": "file:///data/spot/"}, "output": {"uri": "file:///data//spot/out/"}}, "empty ('//')"),
    ],
    ids=[
        "input-scheme",
        "output-scheme",
        "overlap",
        "negative-gpus",
        "empty-segment",
        "hash",
        "query",
        "bel",
        "dotdot",
        "file-empty-segment",
    ],
)
def test_invalid_reconstructionjob_is_rejected(
    spec: dict[str, Any], message: str, namespace: str, kubectl: Any
) -> None:
    result = kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(minimal_rj("bad", **spec)), check=False)
    assert result.returncode != 0, "the apiserver accepted an invalid ReconstructionJob"
    assert message in result.stderr, result.stderr


def test_printer_columns(namespace: str, kubectl: Any) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(minimal_rj("spot")))
    status = {
        "phase": "Running",
        "progress": 42,
        "stage": "refine",
        "metrics": metrics_patch({"psnr": 31.546218})["metrics"],  # what the worker writes
        "reason": "Refining",
        "message": "iteration 1200 of 3000",
    }
    kubectl("patch", "rj", "spot", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}))  # fmt: skip
    header, row = kubectl("get", "rj", "-n", namespace).stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "STAGE", "PSNR", "AGE"]
    assert row.split()[:5] == ["spot", "Running", "42", "refine", "31.5"]  # one decimal, as people read it
    header, row = kubectl("get", "rj", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "STAGE", "PSNR", "AGE", "REASON", "MESSAGE"]
    assert row.split()[6:] == ["Refining", "iteration", "1200", "of", "3000"]


def test_a_transition_event_posted_twice_is_recorded_once(namespace: str, api: Any, core: client.CoreV1Api) -> None:
    """An operator restarted mid-job re-derives its phases and may see JobCreated again: one Event."""
    from recon_operator.events import transition_event
    from recon_operator.reconciler import Reconciler
    from recon_operator.settings import OperatorSettings

    owner = {"metadata": {"name": "spot", "namespace": namespace, "uid": "0b7c6f3e-0000-4000-8000-000000000001"}}
    status = {"phase": "Pending", "reason": "JobCreated", "message": "created Job spot-1", "attempts": 1}
    first, after_restart = transition_event(None, status), transition_event("Running", status)
    assert first is not None and after_restart is not None
    reconciler = Reconciler(OperatorSettings(), api)
    reconciler._post_event(owner, first)
    reconciler._post_event(owner, after_restart)
    events = core.list_namespaced_event(namespace).items
    assert [(e.reason, e.involved_object.name) for e in events] == [("JobCreated", "spot")]


def test_the_charts_aggregated_roles_let_namespace_editors_and_viewers_use_reconstruction_jobs(
    namespace: str, kubectl: Any
) -> None:
    """The chart's <fullname>-edit/-view ClusterRoles join the built-in edit/view roles (the
    controller-manager's aggregation), so a user with `edit` in a namespace may create jobs there."""
    import subprocess

    chart = Path(__file__).resolve().parents[2] / "charts" / "recon-operator"
    rendered = subprocess.run(
        [
            str(binaries.binary("helm")), "template", "agg", str(chart),
            "--show-only", "templates/aggregated-roles.yaml", "--kube-version", binaries.versions()["K8S_VERSION"],
        ],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    kubectl("apply", "-f", "-", input=rendered)
    try:
        kubectl("create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice", "-n", namespace)
        kubectl("create", "rolebinding", "bob-view", "--clusterrole=view", "--user=bob", "-n", namespace)

        def can(user: str, *args: str, where: str = namespace) -> bool:
            answer = kubectl("auth", "can-i", *args, "--as", user, "-n", where, check=False).stdout.strip()
            return answer == "yes"

        rj = "reconstructionjobs.recon.dev"
        wait_for("edit to aggregate the chart's role", lambda: can("alice", "create", rj), 60)
        assert can("alice", "delete", rj) and can("alice", "patch", rj) and can("alice", "list", rj)
        assert not can("alice", "patch", rj, "--subresource=status"), "users must not write the status"
        assert not can("alice", "create", rj, where="default"), "only where alice may edit"
        wait_for("view to aggregate the chart's role", lambda: can("bob", "list", rj), 60)
        assert can("bob", "get", rj) and not can("bob", "create", rj) and not can("bob", "delete", rj)
    finally:
        kubectl("delete", "-f", "-", input=rendered, check=False)
