"""The act layer: carries out `reconcile.decide`'s decisions against the API server and the object store."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf
import kubernetes
from kubernetes.client.exceptions import ApiException

from recon_operator.events import Event, event_manifest, transition_event
from recon_operator.identity import build_identity
from recon_operator.jobspec import build_job
from recon_operator.labels import JOB_LABEL
from recon_operator.metrics import OperatorMetrics
from recon_operator.names import job_name, label_value
from recon_operator.phases import TERMINAL, Observation, Phase, Reason, confirm_outputs, parse_time
from recon_operator.preflight import PreflightError, credentials_from_secret, preflight
from recon_operator.reconcile import (
    Action,
    Decision,
    decide,
    from_observation,
    is_finished,
    owned_status,
    rfc3339,
    status_fields,
)
from recon_operator.settings import OperatorSettings
from recon_operator.spec import API_GROUP, API_VERSION, PLURAL, ReconstructionJobSpec
from recon_operator.storage import MANIFEST, StoreAccess, object_exists, parse_location

Obj = Mapping[str, Any]
log = logging.getLogger("recon_operator")
STICKY = frozenset({*TERMINAL, Phase.SUSPENDED})


def load_kube_config() -> kubernetes.client.ApiClient:
    """In-cluster identity when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    configuration = kubernetes.client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = 32  # one per handler thread, plus room
    return kubernetes.client.ApiClient(configuration)


def raw_json(response: object) -> Any:
    """The body of a call made with `_preload_content=False` (the client's stubs type it as the model)."""
    return json.loads(cast("Any", response).data)


class KeyedLocks:
    """One lock per ReconstructionJob: its handlers never act on it concurrently."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    def get(self, key: tuple[str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def drop(self, key: tuple[str, str]) -> None:
        with self._guard:
            self._locks.pop(key, None)


@dataclass
class Reconciler:
    settings: OperatorSettings
    api: kubernetes.client.ApiClient
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    # (uid, operator-owned status) last patched onto each CR: guards against cached bodies that lag it.
    published: dict[tuple[str, str], tuple[str | None, dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: OperatorSettings) -> Reconciler:
        return cls(settings, load_kube_config())

    @property
    def batch(self) -> kubernetes.client.BatchV1Api:
        return kubernetes.client.BatchV1Api(self.api)

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api)

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api)

    def forget(self, namespace: str, name: str) -> None:
        self.published.pop((namespace, name), None)
        self.metrics.phases.forget(namespace, name)
        self.locks.drop((namespace, name))

    # ---- the loop body -------------------------------------------------------------------------

    def run(
        self,
        body: Obj,
        jobs: Sequence[Obj],
        pods: Sequence[Obj],
        *,
        allow_create: bool,
        retry: int,
        workloads: Sequence[Obj] = (),
    ) -> None:
        meta = body["metadata"]
        with self.locks.get((meta["namespace"], meta["name"])):
            body = self._not_older_than_published(body)
            decision = decide(body, jobs, pods, datetime.now(UTC), workloads)
            if decision.action in (Action.CREATE_JOB, Action.CONFIRM_JOB_GONE):
                if not allow_create and decision.action == Action.CREATE_JOB:
                    return
                # Caches may lag our own writes: decide again on the Jobs the API lists now (names are
                # deterministic, so whatever attempt exists is found, and a listed Job is never recreated).
                jobs = self._list_jobs(meta["namespace"], meta["name"])
                decision = decide(body, jobs, pods, datetime.now(UTC), workloads)
                if decision.action == Action.CONFIRM_JOB_GONE:
                    decision = Decision(Action.NONE, decision.attempt, status=decision.status)
                elif decision.action == Action.CREATE_JOB and not allow_create:
                    return
            status = self._act(body, decision, retry)
            self._publish(body, status, decision.observation)

    def _not_older_than_published(self, body: Obj) -> Obj:
        """`body`, with the status this operator last published if the body's predates it.

        Cached bodies can lag our own patches. A phase that ends or pauses the attempt (Succeeded, Failed,
        Cancelled, Suspended) must not be re-decided from an older view: seeing its Job being deleted, the
        older view would call it Cancelled.
        """
        meta = body["metadata"]
        published = self.published.get((meta["namespace"], meta["name"]))
        if published is None or published[0] != meta.get("uid"):
            return body
        status = published[1]
        current = (body.get("status") or {}).get("phase")
        if status["phase"] in STICKY and current != status["phase"]:
            return {**body, "status": {**(body.get("status") or {}), **status}}
        return body

    def _act(self, body: Obj, decision: Decision, retry: int) -> dict[str, Any]:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        spec = ReconstructionJobSpec.model_validate(body["spec"])
        now = datetime.now(UTC)
        match decision.action:
            case Action.CREATE_JOB:
                return self._start_attempt(body, spec, decision, retry, now)
            case Action.DELETE_JOB:
                wanted = job_name(name, decision.attempt)
                # Stopping a failed attempt is decided from cached Jobs, which can lag the Job controller;
                # a Job it has already finished keeps its pods as evidence, so ask the API before deleting.
                if decision.status.get("phase") == Phase.SUSPENDED or not self._job_finished(namespace, wanted):
                    self._delete_job(namespace, wanted)
            case Action.CHECK_OUTPUTS:
                assert decision.observation is not None
                manifest = parse_location(spec.output.uri).child(MANIFEST)
                present = object_exists(self._store_access(spec, namespace), manifest)
                observation = confirm_outputs(decision.observation, manifest, present)
                return from_observation(body, spec, observation, decision.attempt, now)
            case Action.DELETE_RESOURCE:
                self._delete_resource(namespace, name)
        return decision.status

    def _start_attempt(
        self, body: Obj, spec: ReconstructionJobSpec, decision: Decision, retry: int, now: datetime
    ) -> dict[str, Any]:
        namespace = body["metadata"]["namespace"]
        previous = decision.attempt - 1
        try:
            preflight(spec, self._store_access(spec, namespace))
        except PreflightError as error:
            self.metrics.preflight_failures.labels(error.reason.value).inc()
            if error.reason == Reason.STORAGE_UNREACHABLE and retry + 1 < self.settings.preflight_retries:
                message = f"{error.message} (preflight retry {retry + 1} of {self.settings.preflight_retries - 1})"
                waiting = status_fields(body, spec, Phase.PENDING, error.reason, message, previous, now)
                self._publish(body, waiting)
                raise kopf.TemporaryError(message, delay=self.settings.preflight_backoff_s * 2**retry) from None
            return status_fields(body, spec, Phase.FAILED, error.reason, error.message, previous, now)
        for child in build_identity(body):
            self._create(child)
        job = build_job(body, spec, decision.attempt, self.settings)
        self._create(job)
        if decision.attempt == 1:
            created = parse_time(body["metadata"]["creationTimestamp"])
            self.metrics.time_to_job.observe(max(0.0, (now - created).total_seconds()))
        else:
            self.metrics.retries.labels("attempt").inc()
        return decision.status

    def _publish(self, body: Obj, status: dict[str, Any], observation: Observation | None = None) -> None:
        """Merge-patch the operator-owned status fields if they changed; post an Event on a phase change."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        old = body.get("status") or {}
        if owned_status(old) != owned_status(status):
            try:
                self.custom.patch_namespaced_custom_object_status(
                    API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": status}
                )
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
        self.published[(namespace, name)] = (meta.get("uid"), status)
        previous = self.metrics.phases.record(namespace, name, status["phase"])
        if previous is None:
            previous = old.get("phase")
        event = transition_event(previous, status)
        if event is None:
            return
        self._post_event(body, event)
        self.metrics.transitions.labels(status["phase"]).inc()
        if status["phase"] in TERMINAL and observation is not None and observation.pod_failures:
            self.metrics.retries.labels("pod").inc(observation.pod_failures)
        self._observe_timings(body, status)

    def _post_event(self, body: Obj, event: Event) -> None:
        manifest = event_manifest(body, event, rfc3339(datetime.now(UTC)), socket.gethostname())
        try:
            create: Callable[..., Any] = (
                self.core.create_namespaced_event
            )  # the stubs want a model; a dict is sent as is
            create(body["metadata"]["namespace"], manifest, _preload_content=False)
        except ApiException as exc:  # an Event is a courtesy: never fail a reconcile over it
            log.warning(f"could not post Event {event.reason} for {body['metadata']['name']}: {exc.reason}")

    def _observe_timings(self, body: Obj, status: Mapping[str, Any]) -> None:
        phase = status["phase"]
        if phase == Phase.RUNNING and status.get("startTime"):
            created = self._job_created(body, status)
            if created:
                waited = (parse_time(status["startTime"]) - created).total_seconds()
                self.metrics.time_queued.observe(max(0.0, waited))
        if phase in TERMINAL and status.get("startTime") and status.get("completionTime"):
            ran = (parse_time(status["completionTime"]) - parse_time(status["startTime"])).total_seconds()
            self.metrics.run_duration.labels(phase).observe(max(0.0, ran))

    def _job_created(self, body: Obj, status: Mapping[str, Any]) -> datetime | None:
        try:
            response = self.batch.read_namespaced_job(
                status["jobName"], body["metadata"]["namespace"], _preload_content=False
            )
        except ApiException:
            return None
        created = raw_json(response)["metadata"].get("creationTimestamp")
        return parse_time(created) if created else None

    # ---- API and store helpers -----------------------------------------------------------------

    def _store_access(self, spec: ReconstructionJobSpec, namespace: str) -> StoreAccess:
        credentials: tuple[tuple[str, str], ...] = ()
        secret_name = spec.storage.credentials_secret
        if secret_name:
            try:
                secret = self.core.read_namespaced_secret(secret_name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    raise PreflightError(
                        Reason.INPUTS_INVALID,
                        f"Secret {namespace}/{secret_name} (spec.storage.credentialsSecret) does not exist",
                    ) from None
                raise
            credentials = credentials_from_secret(secret, namespace, secret_name)
        return StoreAccess(
            endpoint=spec.storage.endpoint or self.settings.s3_endpoint,
            region=spec.storage.region or self.settings.s3_region,
            credentials=credentials,
            timeout_s=self.settings.preflight_timeout_s,
        )

    def _list_jobs(self, namespace: str, name: str) -> list[dict[str, Any]]:
        selector = f"{JOB_LABEL}={label_value(name)}"
        response = self.batch.list_namespaced_job(namespace, label_selector=selector, _preload_content=False)
        jobs: list[dict[str, Any]] = raw_json(response)["items"]
        return jobs

    def _create(self, obj: dict[str, Any]) -> None:
        """Create `obj`; one that exists already (deterministic names) is what we wanted."""
        namespace = obj["metadata"]["namespace"]
        rbac = kubernetes.client.RbacAuthorizationV1Api(self.api)
        creators: dict[str, Callable[..., Any]] = {
            "ServiceAccount": self.core.create_namespaced_service_account,
            "Role": rbac.create_namespaced_role,
            "RoleBinding": rbac.create_namespaced_role_binding,
            "Job": self.batch.create_namespaced_job,
        }
        create = creators[obj["kind"]]
        try:
            # Raw responses: deserializing every created object into client models only costs memory.
            create(namespace, obj, _preload_content=False)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def _job_finished(self, namespace: str, name: str) -> bool:
        try:
            job = raw_json(self.batch.read_namespaced_job(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return is_finished(job)

    def _delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Foreground")
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _delete_resource(self, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise
