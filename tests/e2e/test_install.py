"""Install with Helm and use it as a user does: apply ReconstructionJobs, watch `kubectl get rj`.

The operator runs from the chart's Deployment with the chart's ServiceAccount and RBAC, nothing else:
every test here is also a test of that identity (and the last one reads the operator's log for
permission errors).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from localinstall import GROUP, helm, install_chart

from localcluster.controlplane import free_port
from tests.e2e.conftest import (
    RELEASE,
    SYSTEM_NAMESPACE,
    TINY_QUALITY,
    Installed,
    Jobs,
    kill_worker,
    operator_logs,
    operator_pod,
    wait_until,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# Long enough to act on a job while it runs (suspend, delete, kill): more refinement steps.
SLOW_QUALITY: dict[str, Any] = {**TINY_QUALITY, "refinement": {**TINY_QUALITY["refinement"], "iterations": 400}}


def can_i(installed: Installed, verb: str, resource: str, namespace: str = "default") -> bool:
    subject = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{RELEASE}"
    result = installed.kubectl("auth", "can-i", verb, resource, "-n", namespace, "--as", subject, check=False)
    return result.stdout.strip() == "yes"


def test_helm_install_runs_the_operator_under_the_charts_identity(installed: Installed) -> None:
    crd = installed.kubectl("get", "crd", f"reconstructionjobs.{GROUP}", "-o", "jsonpath={.status.conditions}").stdout
    assert '"Established"' in crd
    pod = operator_pod(installed)
    assert pod.spec.service_account_name == RELEASE
    # recon-operator: the chart's `command` where the values set one (the node agent), else the image's entrypoint.
    assert pod.spec.containers[0].command == (installed.values.get("command") or None)
    assert "kubectl get rj" in installed.helm_output, "NOTES.txt tells the user how to watch a first job"
    # The least privilege it was given: what it needs, and nothing of the rest.
    needed = [
        ("create", "jobs.batch"),
        ("watch", "reconstructionjobs.recon.dev"),
        ("get", "secrets"),
        ("create", "events"),
    ]
    for verb, resource in needed:
        assert can_i(installed, verb, resource), f"the operator cannot {verb} {resource}"
    for verb, resource in [("list", "secrets"), ("create", "pods"), ("delete", "nodes"), ("create", "clusterroles")]:
        assert not can_i(installed, verb, resource), f"the operator may {verb} {resource}"


def test_namespaced_install_gets_a_role_per_namespace_and_starts_without_refusals(
    installed: Installed, namespace: str, tmp_path: Path
) -> None:
    """`watchNamespaces`: a second release that may only act in `namespace` (its Role) and still starts cleanly."""
    release, home = "recon-operator-ns", "recon-ns-system"  # the chart names its objects after the release
    values = {**installed.values, "watchNamespaces": [namespace], "metrics": {"enabled": False}}
    if installed.local is not None:
        values["livenessProbe"] = {"port": free_port()}
    install_chart(installed.kubeconfig, release, home, values, tmp_path / "values.yaml")
    try:
        subject = f"system:serviceaccount:{home}:{release}"

        def allowed(verb: str, resource: str, where: str) -> bool:
            result = installed.kubectl("auth", "can-i", verb, resource, "-n", where, "--as", subject, check=False)
            return result.stdout.strip() == "yes"

        assert allowed("create", "jobs.batch", namespace)
        assert allowed("patch", "reconstructionjobs.recon.dev/status", namespace)
        assert not allowed("create", "jobs.batch", "default"), "a namespaced install acts only where it watches"
        assert not allowed("get", "secrets", "default")
        # Kopf's startup (API scan, CRD and namespace observation) has nothing refused.
        time.sleep(5)
        logs = installed.kubectl("-n", home, "logs", f"deploy/{release}", "--tail=-1", check=False).stdout
        assert "Not enough permissions" not in logs and "Forbidden" not in logs, logs[-3000:]
    finally:
        helm(installed.kubeconfig, "uninstall", release, "-n", home, "--wait")


def test_job_succeeds_with_outputs_manifest_and_metrics_and_survives_an_operator_restart(
    installed: Installed, jobs: Jobs
) -> None:
    jobs.submit("spot")
    jobs.wait("spot", lambda s: s.get("phase") == "Running" and bool(s.get("stage")), "running")
    # An operator restart mid-run: the Deployment brings a new one; the job neither restarts nor doubles.
    old = operator_pod(installed)
    installed.kubectl("-n", SYSTEM_NAMESPACE, "delete", "pod", old.metadata.name, "--wait=false")
    wait_until("the old operator pod", lambda: operator_pod(installed).metadata.uid != old.metadata.uid, 120)
    status = jobs.wait_phase("spot", "Succeeded", timeout=400)

    assert status["attempts"] == 1, status
    assert [j.metadata.name for j in jobs.worker_jobs("spot")] == [status["jobName"]]
    assert status["progress"] == 100
    metrics = status["metrics"]
    assert metrics["psnr"] > 10 and 0 < metrics["maskIoU"] <= 1, metrics
    # Outputs: a manifest written last, listing every file with the size it has in the store.
    manifest = jobs.manifest("spot")
    prefix = f"{jobs.namespace}/spot/"
    stored = {
        o["Key"].removeprefix(prefix): o["Size"]
        for o in installed.s3.list_objects_v2(Bucket="results", Prefix=prefix)["Contents"]
    }
    files = {f["name"]: f["size"] for f in manifest["files"]}
    assert {"mesh.glb", "report.json"} <= set(files)
    for path, size in files.items():
        assert stored.get(path) == size, f"{path}: manifest says {size} bytes, the store has {stored.get(path)}"
    # What a user sees.
    table = installed.kubectl("-n", jobs.namespace, "get", "rj", "spot", "-o", "wide").stdout
    header, row = table.splitlines()
    assert header.split()[:5] == ["NAME", "PHASE", "PROGRESS", "STAGE", "PSNR"]
    assert row.split()[1:3] == ["Succeeded", "100"]
    assert metrics["psnrText"] == f"{metrics['psnr']:.1f}" and metrics["psnrText"] in row.split()
    # The new operator re-derives the phases from a cold cache and may see a transition again; Events are
    # named after what they record, so each is posted once: one JobCreated, one Succeeded.
    assert status["reason"] == "Succeeded", status
    reasons = [event.split(":", 1)[0] for event in jobs.events("spot")]
    assert reasons.count("JobCreated") == 1 and reasons.count("Succeeded") == 1, reasons


def test_broken_capture_fails_fast_with_inputs_invalid_and_no_job(jobs: Jobs) -> None:
    started = time.monotonic()
    jobs.submit("broken", input_uri="s3://captures/does-not-exist/")
    status = jobs.wait_phase("broken", "Failed", timeout=60)
    assert status["reason"] == "InputsInvalid"
    assert "does-not-exist" in status["message"]
    assert time.monotonic() - started < 60
    assert jobs.worker_jobs("broken") == [], "no worker Job for a capture that cannot work"


def test_suspend_stops_the_worker_and_resume_starts_a_new_attempt(jobs: Jobs) -> None:
    jobs.submit("pause", quality=SLOW_QUALITY)
    first = jobs.running_pod("pause")
    jobs.patch_spec("pause", {"suspend": True})
    jobs.wait_phase("pause", "Suspended", timeout=90)
    wait_until("the suspended worker pod", lambda: not [p for p in jobs.worker_pods("pause")
                                                       if p.metadata.uid == first.metadata.uid])  # fmt: skip
    assert not [j for j in jobs.worker_jobs("pause") if not j.metadata.deletion_timestamp], "the GPU Job is gone"

    jobs.patch_spec("pause", {"suspend": False})
    status = jobs.wait(
        "pause", lambda s: s.get("phase") in ("Pending", "Running") and s.get("attempts") == 2, "a second attempt"
    )
    second = jobs.running_pod("pause")
    assert second.metadata.uid != first.metadata.uid
    assert status["jobName"] != first.metadata.labels["batch.kubernetes.io/job-name"]


def test_delete_mid_run_frees_the_pod(installed: Installed, jobs: Jobs) -> None:
    jobs.submit("gone", quality=SLOW_QUALITY)
    pod = jobs.running_pod("gone")
    installed.kubectl("-n", jobs.namespace, "delete", "rj", "gone", "--wait=false")

    def pod_gone() -> bool:
        try:
            installed.core.read_namespaced_pod(pod.metadata.name, jobs.namespace)
        except ApiException as err:
            return err.status == 404
        return False

    wait_until("the worker pod of the deleted job", pod_gone, timeout=120)
    wait_until("its Job", lambda: not jobs.worker_jobs("gone"), timeout=60)


def test_killed_worker_is_retried_and_resumes_from_its_checkpoint(installed: Installed, jobs: Jobs) -> None:
    quality = {**TINY_QUALITY, "refinement": {**TINY_QUALITY["refinement"], "iterations": 60}}
    jobs.submit("crash", quality=quality, backoffLimit=2)
    # `refine` runs once `reconstruct` is done, and its checkpoint is uploaded before the stage moves on.
    jobs.wait("crash", lambda s: s.get("stage") in ("refine", "texture"), "past reconstruct", timeout=180)
    pod = jobs.running_pod("crash")
    kill_worker(installed, pod)
    status = jobs.wait_phase("crash", "Succeeded", timeout=400)

    assert status["attempts"] == 1, "a worker crash is retried inside the attempt's Job"
    pods = jobs.worker_pods("crash")
    assert len(pods) >= 2 and pod.metadata.uid in {p.metadata.uid for p in pods}
    assert "reconstruct" in jobs.manifest("crash").get("resumedStages", []), jobs.manifest("crash")


def test_operator_logged_no_permission_errors(installed: Installed) -> None:
    """Run last: everything above ran under the chart's RBAC; the operator never hit a refusal."""
    logs = operator_logs(installed)
    assert "recon-operator" in logs or "kopf" in logs, "no operator log to read"
    # RBAC denials read `User "system:serviceaccount:..." cannot <verb> resource ...`; other 403s (new
    # objects in a namespace being deleted at a test's teardown) are not about the chart's identity.
    refusals = [
        line
        for line in logs.splitlines()
        if ("system:serviceaccount:" in line and " cannot " in line) or "Not enough permissions" in line
    ]
    assert not refusals, "\n".join(refusals[:20])
