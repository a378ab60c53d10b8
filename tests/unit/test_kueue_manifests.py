"""The manifests tools/localcluster/kueue.py makes from Kueue's module (pure; needs the module in the Go cache)."""

from __future__ import annotations

from pathlib import Path

import pytest

from localcluster import binaries, kueue


@pytest.fixture(scope="module")
def module() -> Path:
    try:
        return kueue.module_dir()
    except binaries.MissingBinaryError as err:
        pytest.skip(str(err))


def test_the_five_converted_crds_call_kueue_by_url_and_the_others_convert_nothing(module: Path) -> None:
    docs = {d["spec"]["names"]["plural"]: d for d in kueue.crd_documents(module, "https://127.0.0.1:1", "Q0E=")}
    assert {"workloads", "clusterqueues", "localqueues", "resourceflavors", "workloadpriorityclasses"} <= set(docs)
    for plural, doc in docs.items():
        conversion = doc["spec"].get("conversion") or {}
        if plural in kueue.CONVERTED_CRDS:
            assert conversion["webhook"]["clientConfig"] == {"url": "https://127.0.0.1:1/convert", "caBundle": "Q0E="}
        else:
            assert conversion.get("strategy", "None") == "None", plural


def test_webhooks_are_kueues_own_and_batch_jobs_by_url_named_for_its_cert_manager(module: Path) -> None:
    configs = kueue.webhook_configurations(module, "https://127.0.0.1:1", "Q0E=")
    names = {c["metadata"]["name"] for c in configs}
    assert names == {"kueue-mutating-webhook-configuration", "kueue-validating-webhook-configuration"}
    hooks = [w for c in configs for w in c["webhooks"]]
    assert {"mjob.kb.io", "vjob.kb.io", "mworkload.kb.io", "vclusterqueue.kb.io"} <= {w["name"] for w in hooks}
    assert not {"mpod.kb.io", "vpod.kb.io", "mdeployment.kb.io"} & {w["name"] for w in hooks}
    for hook in hooks:
        assert hook["clientConfig"]["url"].startswith("https://127.0.0.1:1/") and "service" not in hook["clientConfig"]


def test_configuration_binds_only_loopback_and_turns_off_what_a_local_cluster_lacks() -> None:
    config = kueue.configuration(1, 2, 3, Path("/certs"))
    assert config["webhook"] == {"host": "127.0.0.1", "port": 1, "certDir": "/certs"}
    assert config["health"]["healthProbeBindAddress"] == "127.0.0.1:2"
    assert config["metrics"]["bindAddress"] == "127.0.0.1:3"
    assert config["leaderElection"] == {"leaderElect": False}
    assert config["featureGates"] == {"VisibilityOnDemand": False}  # its API server would bind 0.0.0.0
    assert config["integrations"]["frameworks"] == ["batch/job"]


def test_configuration_reconciles_concurrently_and_shares_fairly() -> None:
    # Without groupKindConcurrency every Kueue controller reconciles one object at a time: 500 queued
    # Jobs then wait minutes for their Workloads (docs/kueue.md, "Scale").
    config = kueue.configuration(1, 2, 3, Path("/certs"))
    assert config["controller"]["groupKindConcurrency"]["Job.batch"] == 5
    assert config["controller"]["groupKindConcurrency"]["Workload.kueue.x-k8s.io"] == 5
    assert config["fairSharing"]["preemptionStrategies"] == ["LessThanOrEqualToFinalShare", "LessThanInitialShare"]
    assert (
        kueue.configuration(1, 2, 3, Path("/certs"), job_concurrency=1)["controller"]["groupKindConcurrency"][
            "Job.batch"
        ]
        == 1
    )
