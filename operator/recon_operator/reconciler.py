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

from recon_operator.claims import output_conflict
from recon_operator.events import Event, event_manifest, transition_event
from recon_operator.freshness import NewestSeen
from recon_operator.identity import build_identity
from recon_operator.jobspec import build_job, build_poses_job
from recon_operator.labels import JOB_LABEL
from recon_operator.metrics import OperatorMetrics
from recon_operator.names import job_name, label_value, poses_job_name
from recon_operator.outputs import MAX_MANIFEST_BYTES, listing_problem, outputs_status, parse_manifest
from recon_operator.phases import TERMINAL, Observation, Phase, Reason, confirm_outputs, parse_time
from recon_operator.policy import violations
from recon_operator.preflight import PreflightError, credentials_from_secret, preflight
from recon_operator.reconcile import (
    RECORD_ANNOTATION,
    Action,
    Decision,
    decide,
    from_observation,
    is_finished,
    owned_by,
    owned_status,
    record_annotation,
    record_of,
    rfc3339,
    status_fields,
    trusted,
)
from recon_operator.settings import OperatorSettings
from recon_operator.spec import API_GROUP, API_VERSION, KIND, PLURAL, ReconstructionJobSpec
from recon_operator.storage import MANIFEST, StoreAccess, object_size, parse_location, read_object

Obj = Mapping[str, Any]
log = logging.getLogger("recon_operator")
STICKY = frozenset({*TERMINAL, Phase.SUSPENDED})
LEFTOVER_RETRY_S = 2.0  # how often an attempt waiting for a deleted namesake's objects tries again


class Refused(Exception):
    """An attempt that cannot start: the CR fails with `reason`, and `message` names the culprit."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Leftover(Exception):
    """An object of the worker's name still owned by a deleted ReconstructionJob of the same name.

    No two ReconstructionJobs of one name exist at once, so that one is gone and garbage collection will
    remove what it owned: the attempt waits (retried by Kopf's backoff) instead of failing NameConflict.
    """


def api_message(exc: ApiException) -> str:
    """The API server's own message in an error response (its Status body), else the HTTP reason."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return str(message or exc.reason or f"HTTP {exc.status}")


def load_kube_config() -> kubernetes.client.ApiClient:
    """In-cluster identity when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    configuration = kubernetes.client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = 32  # one per handler thread, plus room
    return kubernetes.client.ApiClient(configuration)


def _version(body: Any) -> int:
    """A CR's metadata.resourceVersion as a number (etcd's revision); -1 when it is not one."""
    value = str(((body or {}).get("metadata") or {}).get("resourceVersion") or "")
    return int(value) if value.isdigit() else -1


def raw_json(response: object) -> Any:
    """The body of a call made with `_preload_content=False` (the client's stubs type it as the model)."""
    return json.loads(cast("Any", response).data)


class KeyedLocks:
    """One lock per ReconstructionJob: its handlers never act on it concurrently.

    Re-entrant: a caller that reads its views of the CR under the lock (so that no other thread decides
    from newer ones in between) holds it while `Reconciler.run` takes it again.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.RLock] = {}

    def get(self, key: tuple[str, str]) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(key, threading.RLock())

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
    # resourceVersion of the CR after the operator's last write to it: a listing older than that predates it.
    written: dict[tuple[str, str], int] = field(default_factory=dict)
    # The newest version of each owned Job and Pod seen: a lagging view is never decided from.
    newest: NewestSeen = field(default_factory=NewestSeen)

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
        self.written.pop((namespace, name), None)
        self.newest.forget((namespace, name))
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
        claims: Sequence[Obj] = (),
        workloads: Sequence[Obj] = (),
        listing: bool = False,
    ) -> None:
        """Decide and act for `body`; `claims`: the other ReconstructionJobs known (for output-prefix claims);
        `workloads`: Kueue's Workloads of its Jobs (when they are watched). `listing`: `body`, `jobs` and
        `pods` are one listing (the healer's), skipped when it predates this operator's last write to the CR:
        the Jobs and Pods it holds are older than what that write was decided from."""
        meta = body["metadata"]
        with self.locks.get((meta["namespace"], meta["name"])):
            key = (meta["namespace"], meta["name"])
            if listing and _version(body) < self.written.get(key, -1):
                return
            # Only this incarnation's Jobs: a deleted CR's of the same name may linger (see owned_by).
            jobs, pods = self.newest.freshen(key, owned_by(body, jobs)), self.newest.freshen(key, pods)
            observed = body
            # Decisions come from the operator's own record, never from owned fields a worker token wrote.
            body = self._not_older_than_published(trusted(observed, jobs))
            decision = decide(body, jobs, pods, datetime.now(UTC), workloads=workloads)
            if decision.action in (Action.CREATE_JOB, Action.CREATE_POSED_JOB, Action.CONFIRM_JOB_GONE):
                if not allow_create and decision.action == Action.CREATE_JOB:
                    return
                # Caches may lag our own writes: decide again on the Jobs the API lists now (names are
                # deterministic, so whatever attempt exists is found, and a listed Job is never recreated).
                jobs = self.newest.freshen(key, owned_by(observed, self._list_jobs(meta["namespace"], meta["name"])))
                body = self._not_older_than_published(trusted(observed, jobs))
                creating = decision.action in (Action.CREATE_JOB, Action.CREATE_POSED_JOB)
                decision = decide(body, jobs, pods, datetime.now(UTC), workloads=workloads)
                if creating and decision.action not in (Action.CREATE_JOB, Action.CREATE_POSED_JOB):
                    # The Job to create exists already: the cached view was stale, and its pods are too (a
                    # running worker would read as Pending). A watch event or the next sweep decides from a
                    # view that has them.
                    return
                if decision.action == Action.CONFIRM_JOB_GONE:
                    decision = Decision(Action.NONE, decision.attempt, status=decision.status)
                elif decision.action == Action.CREATE_JOB and not allow_create:
                    return
            decision = self._with_create_refusal(body, jobs, pods, decision, workloads)
            status = self._act(body, decision, retry, claims)
            self._publish(body, status, decision.observation, observed)

    def _with_create_refusal(
        self, body: Obj, jobs: Sequence[Obj], pods: Sequence[Obj], decision: Decision, workloads: Sequence[Obj] = ()
    ) -> Decision:
        """While a Job has no pod, the Job controller's FailedCreate Event says why (e.g. no such PriorityClass)."""
        observation = decision.observation
        if decision.action != Action.NONE or observation is None or observation.reason != Reason.JOB_CREATED:
            return decision
        namespace, name = body["metadata"]["namespace"], job_name(body["metadata"]["name"], decision.attempt)
        refusal = self._failed_create(namespace, name)
        if refusal is None:
            return decision
        return decide(body, jobs, pods, datetime.now(UTC), {name: refusal}, workloads=workloads)

    def _failed_create(self, namespace: str, job: str) -> str | None:
        selector = f"involvedObject.kind=Job,involvedObject.name={job},reason=FailedCreate"
        try:
            response = self.core.list_namespaced_event(namespace, field_selector=selector, _preload_content=False)
        except ApiException as exc:
            log.warning(f"could not read the Events of Job {namespace}/{job}: {exc.reason}")
            return None
        events = raw_json(response)["items"]
        if not events:
            return None
        latest = max(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        return str(latest.get("message") or "FailedCreate")

    def _not_older_than_published(self, body: Obj) -> Obj:
        """`body`, with the status this operator last published if the body's predates it.

        Cached bodies can lag our own patches: a body older than the operator's last status write (by
        resourceVersion) shows the status that write replaced, so it gets the one written (decide keeps a
        Running CR Running only when it knows it is). A phase that ends or pauses the attempt (Succeeded,
        Failed, Cancelled, Suspended) must not be re-decided from an older view in any case: seeing its Job
        being deleted, the older view would call it Cancelled.
        """
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        published = self.published.get(key)
        if published is None or published[0] != meta.get("uid"):
            return body
        status = published[1]
        current = (body.get("status") or {}).get("phase")
        predates = _version(body) < self.written.get(key, -1)
        if predates or (status["phase"] in STICKY and current != status["phase"]):
            return {**body, "status": {**(body.get("status") or {}), **status}}
        return body

    def _act(self, body: Obj, decision: Decision, retry: int, claims: Sequence[Obj]) -> dict[str, Any]:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        spec = ReconstructionJobSpec.model_validate(body["spec"])
        now = datetime.now(UTC)
        match decision.action:
            case Action.CREATE_JOB:
                try:
                    return self._start_attempt(body, spec, decision, retry, now, claims)
                except Refused as refused:
                    self.metrics.preflight_failures.labels(refused.reason.value).inc()
                    return status_fields(
                        body, spec, Phase.FAILED, refused.reason, refused.message, decision.attempt - 1, now
                    )
            case Action.CREATE_POSED_JOB:
                try:
                    self._start_worker(body, spec, decision.attempt)
                except Refused as refused:
                    return status_fields(
                        body, spec, Phase.FAILED, refused.reason, refused.message, decision.attempt, now
                    )
            case Action.DELETE_JOB:
                # Whichever of the attempt's Jobs runs: its poses Job, or its worker Job.
                for wanted in (job_name(name, decision.attempt), poses_job_name(name, decision.attempt)):
                    # Stopping a failed attempt is decided from cached Jobs, which can lag the Job controller;
                    # a Job it has already finished keeps its pods as evidence, so ask the API before deleting.
                    if decision.status.get("phase") == Phase.SUSPENDED or not self._job_finished(namespace, wanted):
                        self._delete_job(namespace, wanted)
            case Action.CHECK_OUTPUTS:
                assert decision.observation is not None
                observation = self._verify_outputs(spec, namespace, decision.observation)
                return from_observation(body, spec, observation, decision.attempt, now)
            case Action.DELETE_RESOURCE:
                self._delete_resource(namespace, name)
        return decision.status

    def _verify_outputs(self, spec: ReconstructionJobSpec, namespace: str, observation: Observation) -> Observation:
        """Succeeded only with a manifest that parses and lists files present at their listed sizes."""
        out = parse_location(spec.output.uri)
        manifest = out.child(MANIFEST)
        access = self._store_access(spec, namespace)
        data = read_object(access, manifest, MAX_MANIFEST_BYTES)
        if data is None:
            return confirm_outputs(observation, manifest, "does not exist")
        try:
            files = parse_manifest(data)
        except ValueError as exc:
            return confirm_outputs(observation, manifest, str(exc))
        found = {f.name: object_size(access, out.child(f.name)) for f in files}
        problem = listing_problem(files, found)
        return confirm_outputs(observation, manifest, problem, outputs_status(manifest, out.uri, files))

    def _start_attempt(
        self,
        body: Obj,
        spec: ReconstructionJobSpec,
        decision: Decision,
        retry: int,
        now: datetime,
        claims: Sequence[Obj],
    ) -> dict[str, Any]:
        namespace = body["metadata"]["namespace"]
        previous = decision.attempt - 1
        refused = violations(spec, self.settings)
        if refused:
            raise Refused(Reason.POLICY_VIOLATION, "; ".join(refused))
        conflict = output_conflict(body, ((other, trusted(other, ()).get("status") or {}) for other in claims))
        if conflict:
            raise Refused(Reason.OUTPUT_CONFLICT, conflict)
        try:
            needs_poses = preflight(spec, self._store_access(spec, namespace))
        except PreflightError as error:
            self.metrics.preflight_failures.labels(error.reason.value).inc()
            if error.reason == Reason.STORAGE_UNREACHABLE and retry + 1 < self.settings.preflight_retries:
                message = f"{error.message} (preflight retry {retry + 1} of {self.settings.preflight_retries - 1})"
                waiting = status_fields(body, spec, Phase.PENDING, error.reason, message, previous, now)
                self._publish(body, waiting)
                raise kopf.TemporaryError(message, delay=self.settings.preflight_backoff_s * 2**retry) from None
            return status_fields(body, spec, Phase.FAILED, error.reason, error.message, previous, now)
        try:
            status = self._create_attempt(body, spec, decision, now, needs_poses)
        except Leftover as leftover:
            waiting = status_fields(body, spec, Phase.PENDING, Reason.REPLACING, str(leftover), previous, now)
            self._publish(body, waiting)
            raise kopf.TemporaryError(str(leftover), delay=LEFTOVER_RETRY_S) from None
        if decision.attempt == 1:
            created = parse_time(body["metadata"]["creationTimestamp"])
            self.metrics.time_to_job.observe(max(0.0, (now - created).total_seconds()))
        else:
            self.metrics.retries.labels("attempt").inc()
        return status

    def _create_attempt(
        self, body: Obj, spec: ReconstructionJobSpec, decision: Decision, now: datetime, needs_poses: bool
    ) -> dict[str, Any]:
        """The worker's identity, then the attempt's first Job (its poses Job, or its worker Job)."""
        uid = body["metadata"]["uid"]
        for child in build_identity(body):
            self._create_owned(child, uid)
        status = decision.status
        if needs_poses:
            # Structure from motion first, in a CPU Job; its success creates the worker Job (CREATE_POSED_JOB).
            job = build_poses_job(body, spec, decision.attempt, self.settings)
            message = f"creating poses Job {job['metadata']['name']} (photos to pose by structure from motion)"
            status = status_fields(
                body,
                spec,
                Phase.POSING,
                Reason.JOB_CREATED,
                message,
                decision.attempt,
                now,
                job=job["metadata"]["name"],
            )
        else:
            job = build_job(body, spec, decision.attempt, self.settings)
        self._create_owned(job, uid)
        return status

    def _start_worker(self, body: Obj, spec: ReconstructionJobSpec, attempt: int) -> None:
        """The worker Job of `attempt`, once its poses Job has succeeded (preflight and identity came before it)."""
        refused = violations(spec, self.settings)  # the spec may have changed while the photos were posed
        if refused:
            raise Refused(Reason.POLICY_VIOLATION, "; ".join(refused))
        self._create_owned(build_job(body, spec, attempt, self.settings), body["metadata"]["uid"])

    def _publish(
        self,
        body: Obj,
        status: dict[str, Any],
        observation: Observation | None = None,
        observed: Obj | None = None,
    ) -> None:
        """Record and merge-patch the operator-owned status fields where they differ; Event on a phase change.

        `body` is what was decided from (the operator's record); `observed` the CR as read, whose status
        may carry owned fields someone else wrote: those are restored.
        """
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        old = body.get("status") or {}
        shown = (observed if observed is not None else body).get("status") or {}
        try:
            # The record first: a status that a crash leaves unrecorded is re-derived, never trusted.
            if record_of(observed if observed is not None else body) != owned_status(status):
                record = record_annotation(status, meta["uid"])
                patch = {"metadata": {"annotations": {RECORD_ANNOTATION: record}}}
                self.custom.patch_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name, patch)
            if owned_status(shown) != owned_status(status):
                patched = self.custom.patch_namespaced_custom_object_status(
                    API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": status}
                )
                self.written[(namespace, name)] = _version(patched)
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
            if exc.status == 409:  # this transition's Event exists (posted before a restart): not twice
                return
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

    def _create_owned(self, obj: dict[str, Any], owner_uid: str) -> None:
        """Create `obj`; one of that name that exists already must be owned by `owner_uid` (a restart made it).

        Names are deterministic, so anyone could have made an object of that name first (a privileged
        `ci-worker` ServiceAccount beside a CR named `ci`): that one is never used. A Job the API refuses
        (values the CRD let through) fails the CR with the API server's message.
        """
        meta = obj["metadata"]
        namespace, kind = meta["namespace"], obj["kind"]
        rbac = kubernetes.client.RbacAuthorizationV1Api(self.api)
        calls: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
            "ServiceAccount": (self.core.create_namespaced_service_account, self.core.read_namespaced_service_account),
            "Role": (rbac.create_namespaced_role, rbac.read_namespaced_role),
            "RoleBinding": (rbac.create_namespaced_role_binding, rbac.read_namespaced_role_binding),
            "Job": (self.batch.create_namespaced_job, self.batch.read_namespaced_job),
        }
        create, read = calls[kind]
        try:
            # Raw responses: deserializing every created object into client models only costs memory.
            create(namespace, obj, _preload_content=False)
            return
        except ApiException as exc:
            if kind == "Job" and exc.status in (400, 422):
                raise Refused(
                    Reason.JOB_REJECTED, f"the API server refused Job {meta['name']}: {api_message(exc)}"
                ) from None
            if exc.status != 409:
                raise
        existing = raw_json(read(meta["name"], namespace, _preload_content=False))
        owners = (existing.get("metadata") or {}).get("ownerReferences") or []
        if any(ref.get("uid") == owner_uid and ref.get("controller") for ref in owners):
            return
        ours: Obj = next((ref for ref in meta.get("ownerReferences") or [] if ref.get("uid") == owner_uid), {})
        if any(ref.get("kind") == KIND and ref.get("name") == ours.get("name") for ref in owners):
            # `kubectl delete` then `apply` (or a retry) came before garbage collection of the old one's.
            raise Leftover(
                f"{kind} {namespace}/{meta['name']} still belongs to the deleted ReconstructionJob of this "
                "name; waiting for garbage collection to remove it"
            )
        raise Refused(
            Reason.NAME_CONFLICT,
            f"{kind} {namespace}/{meta['name']} already exists and is not owned by this ReconstructionJob: "
            f"it is never used for its worker; rename the ReconstructionJob or remove that {kind}",
        )

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
