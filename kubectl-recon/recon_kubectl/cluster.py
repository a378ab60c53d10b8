"""The cluster side: kubeconfig and context as kubectl reads them, ReconstructionJobs, pods and logs.

Errors a user can act on (a wrong context, an unreachable server, the CRD not installed, no such job)
become `ClusterError` with a message that names the culprit; `cli.py` prints it and exits 1.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from recon_kubectl.resource import GROUP, PLURAL, VERSION


class ClusterError(RuntimeError):
    """Something about the cluster that the user must fix (exit 1)."""


@dataclass
class Cluster:
    api: client.ApiClient
    namespace: str
    context: str
    server: str

    @classmethod
    def connect(cls, context: str | None = None, namespace: str | None = None) -> Cluster:
        """The user's kubeconfig (KUBECONFIG or ~/.kube/config) and context, like kubectl; in a pod, its account."""
        # Read now, not at import: the kubernetes client caches KUBECONFIG when it is first imported.
        kubeconfig = os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
        try:
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        except (ConfigException, FileNotFoundError) as exc:
            if context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config()
                return cls(client.ApiClient(), namespace or "default", "in-cluster", "in-cluster")
            raise ClusterError(f"cannot read a kubeconfig ({kubeconfig}): {exc}") from None
        names = [c["name"] for c in contexts]
        chosen = context or (active or {}).get("name")
        if chosen not in names:
            listed = ", ".join(names) or "none"
            raise ClusterError(f"context {chosen!r} is not in the kubeconfig {kubeconfig} (contexts: {listed})")
        entry = next(c for c in contexts if c["name"] == chosen)
        try:
            api = config.new_client_from_config(config_file=kubeconfig, context=chosen)
        except ConfigException as exc:
            raise ClusterError(f"context {chosen!r} in {kubeconfig} is unusable: {exc}") from None
        ns = namespace or entry.get("context", {}).get("namespace") or "default"
        return cls(api, str(ns), str(chosen), str(api.configuration.host))

    # ---- plumbing ------------------------------------------------------------------------------

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise self._api_error(what, exc) from None
        except HTTPError as exc:
            raise ClusterError(f"cannot reach the cluster at {self.server} (context {self.context}): {exc}") from None

    def _api_error(self, what: str, exc: ApiException) -> ClusterError:
        if exc.status == 401:
            return ClusterError(f"{what}: the cluster refused the credentials of context {self.context} (401)")
        if exc.status == 403:
            return ClusterError(f"{what}: forbidden for your user in namespace {self.namespace} ({_message(exc)})")
        if exc.status == 404:
            self.require_crd()
            return NotFound(f"{what}: not found in namespace {self.namespace}")
        return ClusterError(f"{what}: {exc.status} {_message(exc)}")

    def require_crd(self) -> None:
        """Fail clearly when the cluster does not serve recon.dev/v1alpha1 (the operator is not installed)."""
        try:
            self._custom.get_api_resources(GROUP, VERSION)
        except ApiException as exc:
            if exc.status == 404:
                raise ClusterError(
                    f"the cluster at {self.server} (context {self.context}) does not serve {GROUP}/{VERSION}: "
                    "the ReconstructionJob CRD is not installed (helm install recon-operator charts/recon-operator)"
                ) from None
            raise self._api_error(f"discovering {GROUP}/{VERSION}", exc) from None
        except HTTPError as exc:
            raise ClusterError(f"cannot reach the cluster at {self.server} (context {self.context}): {exc}") from None

    @property
    def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def _core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    # ---- ReconstructionJobs ----------------------------------------------------------------------

    def get_job(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = self._call(
            f"ReconstructionJob {name}",
            self._custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
        )
        return body

    def list_jobs(self) -> list[dict[str, Any]]:
        self.require_crd()
        body = self._call(
            "listing ReconstructionJobs",
            self._custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
        )
        return sorted(body.get("items", []), key=lambda item: item["metadata"]["name"])

    def create_job(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self.require_crd()
        name = manifest["metadata"]["name"]
        try:
            created: dict[str, Any] = self._custom.create_namespaced_custom_object(  # type: ignore[assignment]
                GROUP, VERSION, self.namespace, PLURAL, dict(manifest)
            )
        except ApiException as exc:
            if exc.status == 409:
                raise ClusterError(
                    f"ReconstructionJob {name} already exists in namespace {self.namespace} "
                    "(choose another --name, or `kubectl recon retry` it)"
                ) from None
            if exc.status == 422:
                raise InvalidJob(f"the apiserver refused ReconstructionJob {name}: {_message(exc)}") from None
            raise self._api_error(f"creating ReconstructionJob {name}", exc) from None
        except HTTPError as exc:
            raise ClusterError(f"cannot reach the cluster at {self.server} (context {self.context}): {exc}") from None
        return created

    def patch_job(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        try:
            patched: dict[str, Any] = self._custom.patch_namespaced_custom_object(  # type: ignore[assignment]
                GROUP, VERSION, self.namespace, PLURAL, name, dict(patch)
            )
        except ApiException as exc:
            if exc.status == 422:
                raise InvalidJob(f"the apiserver refused the change to {name}: {_message(exc)}") from None
            raise self._api_error(f"ReconstructionJob {name}", exc) from None
        return patched

    def delete_job(self, name: str, uid: str, timeout_s: float = 120.0) -> None:
        """Delete exactly the resource with this uid and wait until it is gone, with what it owns.

        Foreground: the resource goes only after garbage collection has removed its Jobs, pods and worker
        identity, so a resource re-created under the same name (`retry`) starts on a clean namespace.
        """
        self._call(
            f"deleting ReconstructionJob {name}",
            self._custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
            body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid), propagation_policy="Foreground"),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                current = self.get_job(name)
            except NotFound:
                return
            if current["metadata"].get("uid") != uid:
                return
            time.sleep(0.5)
        raise ClusterError(f"ReconstructionJob {name} was not deleted within {timeout_s:.0f} s (finalizers?)")

    # ---- Secrets, pods and logs ------------------------------------------------------------------

    def secret_data(self, name: str) -> dict[str, str]:
        import base64

        secret = self._call(f"Secret {name}", self._core.read_namespaced_secret, name, self.namespace)
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def worker_pods(self, job_name: str) -> list[client.V1Pod]:
        """The pods of one worker Job, oldest first (the Job controller labels them with its name)."""
        pods = self._call(
            f"pods of Job {job_name}",
            self._core.list_namespaced_pod,
            self.namespace,
            label_selector=f"batch.kubernetes.io/job-name={job_name}",
        )
        return sorted(pods.items, key=lambda p: p.metadata.creation_timestamp)

    def pods_of_attempt(self, cr_name: str, attempt: int) -> list[client.V1Pod]:
        """The worker pods of one attempt (the operator labels them recon.dev/job and recon.dev/attempt)."""
        pods = self._call(
            f"pods of attempt {attempt}",
            self._core.list_namespaced_pod,
            self.namespace,
            label_selector=f"recon.dev/job={cr_name},recon.dev/attempt={attempt}",
        )
        return sorted(pods.items, key=lambda p: p.metadata.creation_timestamp)

    def logs(self, pod: str, follow: bool = False) -> Iterator[str]:
        """Lines of the worker container's log; with `follow`, until the container ends."""
        if not follow:
            text = self._call(f"logs of pod {pod}", self._core.read_namespaced_pod_log, pod, self.namespace)
            yield from str(text).splitlines()
            return
        response = self._call(
            f"logs of pod {pod}",
            self._core.read_namespaced_pod_log,
            pod,
            self.namespace,
            follow=True,
            _preload_content=False,
        )
        buffered = b""
        for chunk in response.stream(4096):
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
        if buffered:
            yield buffered.decode(errors="replace")


class NotFound(ClusterError):
    """The named object does not exist (exit 1)."""


class InvalidJob(ClusterError):
    """The apiserver refused the job as invalid (exit 2)."""


def _message(exc: ApiException) -> str:
    import json

    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)
