"""The worker's identity: ServiceAccount, Role (own status only), RoleBinding, all owned by the CR."""

from __future__ import annotations

from recon_operator.identity import build_identity

OWNER = {
    "apiVersion": "recon.dev/v1alpha1",
    "kind": "ReconstructionJob",
    "metadata": {"name": "bunny", "namespace": "team-a", "uid": "uid-7"},
}


def test_three_objects_named_after_the_cr_and_owned_by_it() -> None:
    objects = build_identity(OWNER)
    assert [o["kind"] for o in objects] == ["ServiceAccount", "Role", "RoleBinding"]
    for obj in objects:
        assert obj["metadata"]["name"] == "bunny-worker"
        assert obj["metadata"]["namespace"] == "team-a"
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["uid"] == "uid-7"
        assert obj["metadata"]["labels"]["recon.dev/job"] == "bunny"


def test_role_allows_only_get_and_patch_on_this_resources_status() -> None:
    _, role, _ = build_identity(OWNER)
    assert role["rules"] == [
        {
            "apiGroups": ["recon.dev"],
            "resources": ["reconstructionjobs/status"],
            "resourceNames": ["bunny"],
            "verbs": ["get", "patch"],
        }
    ]


def test_binding_ties_the_role_to_the_service_account() -> None:
    _, role, binding = build_identity(OWNER)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "bunny-worker", "namespace": "team-a"}]
