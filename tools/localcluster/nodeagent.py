"""A node agent: registers a Node and runs the containers of pods bound to it as local processes.

What kubelet does, reduced to what a batch workload needs (see docs/local-cluster.md for the list):
the Node with capacity (cpu, memory, pods, nvidia.com/gpu) and conditions, its Lease in kube-node-lease,
pod status (phase, conditions, containerStatuses with exit codes and termination messages), graceful
deletion (SIGTERM to the process group, SIGKILL after the grace period, then the final delete), and
the pod's ServiceAccount identity as a kubeconfig with a TokenRequest token bound to the pod.

It authenticates as system:node:<name>, so the Node authorizer and NodeRestriction limit it as they
limit a kubelet: it can only read the Secrets and ConfigMaps its own pods reference.

    python -m localcluster.nodeagent --kubeconfig K --name local-node --state-dir DIR [--gpus 1 ...]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.server
import logging
import os
import platform
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import deque
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from localcluster import binaries
from localcluster.kube import Obj, raw, watch_events
from localcluster.kubeconfig import write_token_kubeconfig
from localcluster.podspec import (
    DEFAULT_TERMINATION_MESSAGE_PATH,
    GPU_RESOURCE,
    ConfigError,
    PathMap,
    container_env,
    decoded_data,
    expand,
    field_ref,
    requested_gpus,
    volume_env_name,
)

log = logging.getLogger("nodeagent")
LEASE_SECONDS = 40
LEASE_RENEW_SECONDS = 10
STATUS_REPORT_SECONDS = 60
TOKEN_SECONDS = 3600
MAX_MESSAGE_BYTES = 4096  # kubelet's limit on a termination message
FALLBACK_LOG_LINES = 80  # kubelet's FallbackToLogsOnError: the last 80 lines / 2048 bytes
FALLBACK_LOG_BYTES = 2048


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeAgent:
    def __init__(self, api: client.ApiClient, args: argparse.Namespace) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.name: str = args.name
        self.state_dir = Path(args.state_dir).resolve()
        self.pods_dir = self.state_dir / "pods"
        self.server: str = api.configuration.host
        self.ca_file = self.state_dir / "ca.crt"
        self.capacity = {
            "cpu": args.cpu,
            "memory": args.memory,
            "pods": str(args.pods),
            "ephemeral-storage": args.ephemeral_storage,
        }
        # The extended resource its GPUs are advertised as: nvidia.com/gpu, or one MIG profile
        # (nvidia.com/mig-1g.10gb, as NVIDIA's device plugin names MIG slices with its "mixed" strategy).
        self.gpu_resource: str = args.gpu_resource
        if args.gpus > 0:
            self.capacity[self.gpu_resource] = str(args.gpus)
        self.labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
            **dict(label.split("=", 1) for label in args.label),
        }
        self.taints = [_parse_taint(t) for t in args.taint]
        self.log_server = (
            LogServer(self, args.serving_cert, args.serving_key, args.client_ca) if args.serving_cert else None
        )
        self.free_gpus = list(range(args.gpus))
        self.gpu_lock = threading.Lock()
        self.workers: dict[str, PodWorker] = {}
        self.stopping = threading.Event()

    # ---- node --------------------------------------------------------------------------------

    def register(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.pods_dir.mkdir(exist_ok=True)
        ca = self.api.configuration.ssl_ca_cert
        shutil.copyfile(ca, self.ca_file)  # kube_config writes the embedded CA to a temp file
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": self.labels},
            "spec": {"taints": self.taints} if self.taints else {},
        }
        try:
            raw(self.core.create_node, node)
            log.info("registered node %s", self.name)
        except ApiException as err:
            if err.status != 409:
                raise
            log.info("node %s exists; taking it over", self.name)
        self.report_status()

    def node_status(self) -> Obj:
        stamp = now()
        conditions = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", "node agent has sufficient memory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "node agent has no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "node agent has sufficient PID"),
            ("Ready", "True", "KubeletReady", "local node agent is posting ready status"),
        ]
        return {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": r,
                    "message": m,
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
                for t, s, r, m in conditions
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_server.port if self.log_server else 0}},
            "nodeInfo": {
                "architecture": self.labels["kubernetes.io/arch"],
                "bootID": "",
                "containerRuntimeVersion": "localcluster://processes",
                "kernelVersion": platform.release(),
                "kubeProxyVersion": "",
                "kubeletVersion": binaries.versions()["K8S_VERSION"],
                "machineID": "",
                "operatingSystem": "linux",
                "osImage": "localcluster node agent (local processes)",
                "systemUUID": "",
            },
        }

    def report_status(self) -> None:
        # lastTransitionTime only moves when a status changes; keep the first one we posted.
        status = self.node_status()
        try:
            current = raw(self.core.read_node, self.name).get("status", {})
            previous = {c["type"]: c for c in current.get("conditions") or []}
            for condition in status["conditions"]:
                old = previous.get(condition["type"])
                if old and old["status"] == condition["status"]:
                    condition["lastTransitionTime"] = old["lastTransitionTime"]
        except ApiException:
            pass
        raw(self.core.patch_node_status, self.name, {"status": status})

    def renew_lease(self, node_uid: str) -> None:
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": now_micro(),
        }
        try:
            raw(self.coordination.patch_namespaced_lease, self.name, "kube-node-lease", {"spec": spec})
        except ApiException as err:
            if err.status != 404:
                raise
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": "kube-node-lease",
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": node_uid}],
                },
                "spec": spec,
            }
            raw(self.coordination.create_namespaced_lease, "kube-node-lease", lease)

    def heartbeat_loop(self) -> None:
        node_uid = raw(self.core.read_node, self.name)["metadata"]["uid"]
        last_status = time.monotonic()
        while not self.stopping.wait(LEASE_RENEW_SECONDS):
            try:
                self.renew_lease(node_uid)
                if time.monotonic() - last_status > STATUS_REPORT_SECONDS:
                    self.report_status()
                    last_status = time.monotonic()
            except Exception:  # a missed beat is retried at the next tick
                log.exception("heartbeat failed")

    # ---- pods --------------------------------------------------------------------------------

    def run(self) -> None:
        if self.log_server:
            threading.Thread(target=self.log_server.serve_forever, name="logs", daemon=True).start()
        self.register()
        raw_uid = raw(self.core.read_node, self.name)["metadata"]["uid"]
        self.renew_lease(raw_uid)
        threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True).start()
        selector = f"spec.nodeName={self.name}"
        while not self.stopping.is_set():
            try:
                listing = raw(self.core.list_pod_for_all_namespaces, field_selector=selector)
                seen = set()
                for pod in listing.get("items") or []:
                    seen.add(pod["metadata"]["uid"])
                    self.dispatch("ADDED", pod)
                for uid in list(self.workers):
                    if uid not in seen:
                        self.workers[uid].api_deleted()
                resource_version = listing["metadata"]["resourceVersion"]
                while not self.stopping.is_set():
                    for event in watch_events(
                        self.core.list_pod_for_all_namespaces, resource_version, field_selector=selector
                    ):
                        obj = event["object"]
                        resource_version = obj["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            self.dispatch(event["type"], obj)
            except ApiException as err:
                if err.status != 410:
                    log.warning("pod watch failed (%s); relisting", err.reason)
                    time.sleep(1)
            except Exception:
                if self.stopping.is_set():
                    break
                log.exception("pod watch failed; relisting")
                time.sleep(1)

    def dispatch(self, kind: str, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker:
                worker.api_deleted()
            return
        if worker is None:
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            worker.start()
        else:
            worker.update(pod)

    def forget(self, uid: str) -> None:
        self.workers.pop(uid, None)

    def take_gpus(self, count: int) -> list[int] | None:
        with self.gpu_lock:
            if count > len(self.free_gpus):
                return None
            taken, self.free_gpus = self.free_gpus[:count], self.free_gpus[count:]
            return taken

    def give_gpus(self, gpus: list[int]) -> None:
        with self.gpu_lock:
            self.free_gpus = sorted(self.free_gpus + gpus)

    def shutdown(self) -> None:
        """Node going away: kill every pod process right away (their pods stay as they are)."""
        self.stopping.set()
        for worker in list(self.workers.values()):
            worker.kill_all(signal.SIGKILL)

    def event(self, pod: Obj, kind: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        stamp = now()
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "source": {"component": "kubelet", "host": self.name},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            raw(self.core.create_namespaced_event, meta["namespace"], body)
        except ApiException as err:  # events are best effort, as in kubelet
            log.debug("event %s for %s not recorded: %s", reason, meta["name"], err.reason)


class Container:
    """One container's process and the status kubelet would report for it."""

    def __init__(self, spec: Obj, folder: Path) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.folder = folder
        self.termination_file = folder / "termination-log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.started_at = ""
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        self.paths = PathMap({})

    @property
    def log_file(self) -> Path:
        return self.folder / f"{self.restarts}.log"

    def status(self) -> Obj:
        running = "running" in self.state
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "containerID": f"local://{self.popen.pid}" if self.popen else "",
            "ready": running,
            "started": running,
            "restartCount": self.restarts,
            "state": self.state,
            "lastState": self.last_state,
        }


class PodWorker(threading.Thread):
    """Lifecycle of one pod on this node; wakes on pod updates from the watch."""

    def __init__(self, agent: NodeAgent, pod: Obj) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent = agent
        self.pod = pod
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.folder = agent.pods_dir / f"{self.namespace}_{self.pod_name}_{self.uid}"
        self.changed = threading.Event()
        self.gone = False
        self.containers: list[Container] = []
        self.init_containers: list[Container] = []
        self.gpus: list[int] = []
        self.token_time = 0.0
        self.start_time = ""
        self.lock = threading.Lock()

    # ---- inputs from the watch -----------------------------------------------------------------

    def update(self, pod: Obj) -> None:
        self.pod = pod
        self.changed.set()

    def api_deleted(self) -> None:
        self.gone = True
        self.changed.set()

    def deleting(self) -> bool:
        return self.gone or bool(self.pod["metadata"].get("deletionTimestamp"))

    # ---- lifecycle ---------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.lifecycle()
        except Exception:
            log.exception("pod %s/%s: node agent error", self.namespace, self.pod_name)
        finally:
            self.kill_all(signal.SIGKILL)
            self.release_gpus()
            shutil.rmtree(self.folder / "volumes", ignore_errors=True)
            self.agent.forget(self.uid)

    def lifecycle(self) -> None:
        phase = self.pod.get("status", {}).get("phase", "Pending")
        if phase in ("Succeeded", "Failed") or (phase == "Running" and not self.containers):
            # Terminal already, or started by an earlier agent whose processes are gone.
            if phase == "Running":
                self.fail_pod("NodeAgentRestarted", "the node agent restarted; the pod's processes were lost")
            self.wait_and_delete()
            return
        spec = self.pod["spec"]
        self.containers = [Container(c, self.folder / "containers" / c["name"]) for c in spec["containers"]]
        self.init_containers = [
            Container(c, self.folder / "init-containers" / c["name"]) for c in spec.get("initContainers") or []
        ]
        self.start_time = now()
        self.set_status("Pending")
        gpus = requested_gpus(self.pod, self.agent.gpu_resource)
        if gpus:
            taken = self.agent.take_gpus(gpus)
            if taken is None:
                message = f"Allocate failed: requested {gpus} {self.agent.gpu_resource}, none free"
                self.fail_pod("UnexpectedAdmissionError", message)
                self.wait_and_delete()
                return
            self.gpus = taken

        envs = self.prepare()
        if envs is None:  # deleted while waiting for its configuration
            self.finish_deletion()
            return
        for container in self.init_containers:
            if not self.run_to_completion(container, envs[container.name]):
                if self.deleting():
                    self.finish_deletion()
                    return
                self.set_status("Failed")
                self.wait_and_delete()
                return
        for container in self.containers:
            self.start_container(container, envs[container.name])
        self.set_status("Running")
        self.supervise(envs)

    def prepare(self) -> dict[str, dict[str, str]] | None:
        """Folders, token and environment; retries while a referenced object is missing (as kubelet)."""
        reported = ""
        while not self.deleting():
            try:
                return self.build_environment()
            except ConfigError as err:
                message = str(err)
                if message != reported:
                    reported = message
                    for container in self.containers:
                        container.state = {"waiting": {"reason": "CreateContainerConfigError", "message": message}}
                    self.set_status("Pending")
                    self.agent.event(self.pod, "Warning", "Failed", f"Error: {message}")
            self.changed.wait(2)
            self.changed.clear()
        return None

    def build_environment(self) -> dict[str, dict[str, str]]:
        spec = self.pod["spec"]
        volumes_dir = self.folder / "volumes"
        volume_dirs: dict[str, Path] = {}
        for volume in spec.get("volumes") or []:
            volume_dirs[volume["name"]] = self.materialize_volume(volume, volumes_dir / volume["name"])

        base = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "PYTHONPATH", "PYTHONUNBUFFERED")}
        base["HOSTNAME"] = self.pod_name
        # The venv stands in for the image: its programs (python, recon-worker) resolve first.
        venv_bin = str(Path(sys.executable).parent)
        base["PATH"] = os.pathsep.join(p for p in (venv_bin, base.get("PATH", "")) if p)
        if spec.get("automountServiceAccountToken", True) is not False:
            base["KUBECONFIG"] = str(self.write_identity())
        if self.agent.gpu_resource in self.agent.capacity:
            # As with the NVIDIA device plugin: a pod sees the GPUs it was given, and no others.
            visible = ",".join(str(g) for g in self.gpus)
            base["NVIDIA_VISIBLE_DEVICES"] = visible or "void"
            base["CUDA_VISIBLE_DEVICES"] = visible

        envs: dict[str, dict[str, str]] = {}
        for container in self.init_containers + self.containers:
            container.folder.mkdir(parents=True, exist_ok=True)
            container.termination_file.touch()
            mapping: dict[str, str] = {}
            own = dict(base)
            for mount in container.spec.get("volumeMounts") or []:
                if mount["name"] not in volume_dirs:
                    raise ConfigError(f"volumeMount {mount['mountPath']}: no volume named {mount['name']!r}")
                host = volume_dirs[mount["name"]]
                if mount.get("subPath"):
                    host = host / mount["subPath"]
                    host.mkdir(parents=True, exist_ok=True)
                mapping[mount["mountPath"]] = str(host)
                own[volume_env_name(mount["name"])] = str(host)
            message_path = container.spec.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
            mapping[message_path] = str(container.termination_file)
            own["RECON_TERMINATION_MESSAGE_PATH"] = str(container.termination_file)
            own["RECON_POD_DIR"] = str(self.folder)
            env = container_env(
                self.pod,
                container.spec,
                self.lookup("configmap"),
                self.lookup("secret"),
                self.agent.capacity,
                own,
            )
            paths = PathMap(mapping)
            # Only what the pod declares is a container path; the agent's own variables (KUBECONFIG, PATH,
            # HOME, ...) are host paths already and must survive a mount that happens to cover them (/tmp).
            envs[container.name] = {k: paths.rewrite(v) if own.get(k) != v else v for k, v in env.items()}
            container.paths = paths
        return envs

    def lookup(self, kind: str) -> Any:
        read = (
            self.agent.core.read_namespaced_config_map
            if kind == "configmap"
            else self.agent.core.read_namespaced_secret
        )

        def get(namespace: str, name: str) -> Obj | None:
            try:
                return raw(read, name, namespace)
            except ApiException as err:
                if err.status in (403, 404):  # the Node authorizer answers 403 for objects it cannot see yet
                    return None
                raise

        return get

    def materialize_volume(self, volume: Obj, folder: Path) -> Path:
        """The host folder standing in for a volume; ConfigMap/Secret/projected contents are written out."""
        name = volume["name"]
        if "hostPath" in volume:
            return Path(volume["hostPath"]["path"])  # the host is the node: use the path itself
        folder.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            return folder
        sources: list[Obj]
        if "projected" in volume:
            sources = volume["projected"].get("sources") or []
        else:
            sources = [{k: v} for k, v in volume.items() if k != "name"]
        for source in sources:
            if "configMap" in source or "secret" in source:
                secret = "secret" in source
                ref = source["secret" if secret else "configMap"]
                ref_name = ref.get("secretName" if secret and "secretName" in ref else "name")
                obj = self.lookup("secret" if secret else "configmap")(self.namespace, ref_name)
                if obj is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f'volume {name}: {"secret" if secret else "configmap"} "{ref_name}" not found')
                data = decoded_data(obj, secret)
                items = ref.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    if item["key"] not in data:
                        raise ConfigError(f"volume {name}: key {item['key']} not found in {ref_name}")
                    target = folder / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(data[item["key"]])
            elif "serviceAccountToken" in source:
                token_path = folder / source["serviceAccountToken"]["path"]
                token_path.parent.mkdir(parents=True, exist_ok=True)
                token_path.write_text(self.request_token(source["serviceAccountToken"].get("audience")))
            elif "downwardAPI" in source:
                for item in source["downwardAPI"].get("items") or []:
                    if "fieldRef" not in item:
                        raise ConfigError(f"volume {name}: only fieldRef items of downwardAPI are emulated")
                    target = folder / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(field_ref(self.pod, item["fieldRef"]["fieldPath"]))
            else:
                raise ConfigError(f"volume {name}: {sorted(source)} volumes are not emulated by the local node agent")
        return folder

    # ---- identity ---------------------------------------------------------------------------

    def request_token(self, audience: str | None = None) -> str:
        spec: Obj = {
            "expirationSeconds": TOKEN_SECONDS,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.pod_name, "uid": self.uid},
        }
        if audience:
            spec["audiences"] = [audience]
        account = self.pod["spec"].get("serviceAccountName") or "default"
        try:
            answer = raw(
                self.agent.core.create_namespaced_service_account_token,
                account,
                self.namespace,
                {"spec": spec},
            )
        except ApiException as err:
            raise ConfigError(
                f"TokenRequest for serviceaccount {self.namespace}/{account} failed: {err.reason}"
            ) from err
        return str(answer["status"]["token"])

    def write_identity(self) -> Path:
        """A kubeconfig with the pod's bound ServiceAccount token (refreshed by supervise())."""
        token_file = self.folder / "serviceaccount" / "token"
        token_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = token_file.with_suffix(".tmp")
        tmp.write_text(self.request_token())
        tmp.replace(token_file)  # readers never see a half-written token
        self.token_time = time.monotonic()
        kubeconfig = self.folder / "serviceaccount" / "kubeconfig"
        account = self.pod["spec"].get("serviceAccountName") or "default"
        if not kubeconfig.exists():
            write_token_kubeconfig(
                kubeconfig, self.agent.server, self.agent.ca_file, token_file,
                f"system:serviceaccount:{self.namespace}:{account}", self.namespace,
            )  # fmt: skip
        return kubeconfig

    # ---- processes --------------------------------------------------------------------------

    def start_container(self, container: Container, env: dict[str, str]) -> bool:
        """Start the container's process; on failure record a StartError (exit code 128) and return False."""
        spec = container.spec
        paths = container.paths
        argv = [paths.rewrite(expand(part, env)) for part in (spec.get("command") or []) + (spec.get("args") or [])]
        started = now()
        container.termination_file.write_text("")
        error = None
        if not spec.get("command"):
            error = (
                f"container {container.name!r} has no command: the local node agent runs commands on this "
                f"host and cannot run the entrypoint of image {spec.get('image', '')!r}"
            )
        cwd = self.folder
        if not error and spec.get("workingDir"):
            cwd = Path(paths.rewrite(spec["workingDir"]))
            if str(cwd).startswith(str(self.folder)):
                cwd.mkdir(parents=True, exist_ok=True)
            elif not cwd.is_dir():
                error = f"workingDir {spec['workingDir']!r} does not exist on this host"
        if not error:
            try:
                with container.log_file.open("ab") as out:
                    # Its own process group: deletion signals the process and all its children.
                    container.popen = subprocess.Popen(
                        argv,
                        env=env,
                        cwd=cwd,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
            except FileNotFoundError:
                error = (
                    f'exec: "{argv[0]}": executable file not found in $PATH (images are not pulled on the local node)'
                )
            except PermissionError:
                error = f'exec: "{argv[0]}": permission denied'
            except OSError as err:
                error = f'exec: "{argv[0]}": {err.strerror}'
        if error:
            container.popen = None
            container.state = {
                "terminated": {"exitCode": 128, "reason": "StartError", "message": error,
                               "startedAt": started, "finishedAt": now()}
            }  # fmt: skip
            self.agent.event(self.pod, "Warning", "Failed", f"Error: {error}")
            return False
        assert container.popen is not None
        container.started_at = started
        container.state = {"running": {"startedAt": started}}
        (container.folder / "pid").write_text(f"{container.popen.pid}\n")
        self.agent.event(self.pod, "Normal", "Started", f"Started container {container.name}")
        return True

    def collect(self, container: Container) -> bool:
        """If the process has exited, record its terminated state; True when it has."""
        if container.popen is None:
            return "terminated" in container.state
        code = container.popen.poll()
        if code is None:
            return False
        exit_code = code if code >= 0 else 128 - code  # killed by signal N: 128+N, as container runtimes report
        terminated: Obj = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": container.started_at,
            "finishedAt": now(),
            "containerID": f"local://{container.popen.pid}",
        }
        message = self.termination_message(container, exit_code)
        if message:
            terminated["message"] = message
        container.state = {"terminated": terminated}
        container.popen = None
        return True

    def termination_message(self, container: Container, exit_code: int) -> str:
        try:
            message = container.termination_file.read_bytes()[:MAX_MESSAGE_BYTES].decode(errors="replace")
        except OSError:
            message = ""
        policy = container.spec.get("terminationMessagePolicy", "File")
        if not message.strip() and exit_code != 0 and policy == "FallbackToLogsOnError":
            try:
                with container.log_file.open("rb") as handle:
                    lines = b"".join(deque(handle, maxlen=FALLBACK_LOG_LINES))
                message = lines[-FALLBACK_LOG_BYTES:].decode(errors="replace")
            except OSError:
                message = ""
        return message

    def run_to_completion(self, container: Container, env: dict[str, str]) -> bool:
        """Init containers: run one until it exits; True on exit code 0."""
        policy = self.pod["spec"].get("restartPolicy", "Always")
        while True:
            self.set_status("Pending")
            if self.start_container(container, env):
                while not self.collect(container):
                    if self.deleting():
                        self.terminate([container])
                        return False
                    self.changed.wait(0.5)
                    self.changed.clear()
            if container.state["terminated"]["exitCode"] == 0:
                return True
            if policy == "Never" or self.deleting():
                return False
            container.restarts += 1
            time.sleep(min(10, container.restarts))

    def supervise(self, envs: dict[str, dict[str, str]]) -> None:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        while True:
            if self.deleting():
                self.terminate(self.containers)
                self.finish_deletion()
                return
            changed = False
            for container in self.containers:
                was_running = "running" in container.state
                self.collect(container)
                if was_running and "terminated" in container.state:
                    changed = True
                    code = container.state["terminated"]["exitCode"]
                    if policy == "Always" or (policy == "OnFailure" and code != 0):
                        container.last_state = container.state
                        container.restarts += 1
                        self.set_status("Running")
                        time.sleep(min(10, container.restarts))  # a short CrashLoopBackOff
                        self.start_container(container, envs[container.name])
            if all("terminated" in c.state for c in self.containers):
                codes = [c.state["terminated"]["exitCode"] for c in self.containers]
                self.set_status("Succeeded" if all(code == 0 for code in codes) else "Failed")
                self.wait_and_delete()
                return
            if changed:
                self.set_status("Running")
            if self.token_time and time.monotonic() - self.token_time > 0.8 * TOKEN_SECONDS:
                try:
                    self.write_identity()
                except ConfigError:
                    log.exception("token refresh failed for %s/%s", self.namespace, self.pod_name)
            self.changed.wait(0.2)
            self.changed.clear()

    def terminate(self, containers: list[Container]) -> None:
        """Graceful stop: SIGTERM each process group, SIGKILL after the grace period."""
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        running = [c for c in containers if c.popen is not None and c.popen.poll() is None]
        if running:
            self.agent.event(self.pod, "Normal", "Killing", f"Stopping container {', '.join(c.name for c in running)}")
        for container in running:
            _signal_group(container.popen, signal.SIGTERM)
        deadline = time.monotonic() + float(grace)
        while time.monotonic() < deadline and any(c.popen is not None and c.popen.poll() is None for c in running):
            time.sleep(0.1)
        for container in running:
            _signal_group(container.popen, signal.SIGKILL)
            if container.popen is not None:
                container.popen.wait()
        for container in containers:
            self.collect(container)

    def kill_all(self, sig: signal.Signals) -> None:
        for container in self.init_containers + self.containers:
            if container.popen is not None and container.popen.poll() is None:
                _signal_group(container.popen, sig)
                container.popen.wait()

    def finish_deletion(self) -> None:
        """After the processes stopped: a terminal phase, then the final delete (grace 0), as kubelet."""
        if not self.gone:
            if all("terminated" in c.state for c in self.containers):
                codes = [c.state["terminated"]["exitCode"] for c in self.containers]
                self.set_status("Succeeded" if all(code == 0 for code in codes) else "Failed")
            else:
                self.set_status("Failed")
        self.final_delete()

    def release_gpus(self) -> None:
        """Give this pod's GPUs back (once)."""
        if self.gpus:
            self.agent.give_gpus(self.gpus)
            self.gpus = []

    def wait_and_delete(self) -> None:
        """A terminal pod stays until someone deletes it; then kubelet removes it for good. Its GPUs are free
        from now on, as kubelet's device manager frees a terminated pod's devices (the scheduler already
        counts them free), so the next pod on the node is not refused while this one's object remains."""
        self.release_gpus()
        while not self.deleting():
            self.changed.wait(5)
            self.changed.clear()
        self.final_delete()

    def final_delete(self) -> None:
        if self.gone:
            return
        try:
            raw(
                self.agent.core.delete_namespaced_pod, self.pod_name, self.namespace,
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
            )  # fmt: skip
        except ApiException as err:
            if err.status not in (404, 409):
                raise

    def fail_pod(self, reason: str, message: str) -> None:
        patch = {"status": {"phase": "Failed", "reason": reason, "message": message}}
        try:
            raw(self.agent.core.patch_namespaced_pod_status, self.pod_name, self.namespace, patch)
        except ApiException as err:
            log.warning("pod %s/%s: status not updated: %s", self.namespace, self.pod_name, err.reason)

    # ---- status -----------------------------------------------------------------------------

    def set_status(self, phase: str) -> None:
        if self.gone:
            return
        stamp = now()
        containers_ready = phase == "Running" and all("running" in c.state for c in self.containers)
        initialized = all(
            "terminated" in c.state and c.state["terminated"]["exitCode"] == 0 for c in self.init_containers
        )
        sandbox = phase in ("Pending", "Running")
        previous = {c["type"]: c for c in self.pod.get("status", {}).get("conditions") or []}

        def condition(kind: str, ok: bool, reason: str = "") -> Obj:
            status = "True" if ok else "False"
            old = previous.get(kind)
            since = old["lastTransitionTime"] if old and old.get("status") == status else stamp
            cond: Obj = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
            if reason and not ok:
                cond["reason"] = reason
            return cond

        not_ready = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
        status: Obj = {
            "phase": phase,
            "conditions": [
                condition("PodReadyToStartContainers", sandbox),
                condition("Initialized", initialized, "ContainersNotInitialized"),
                condition("ContainersReady", containers_ready, not_ready),
                condition("Ready", containers_ready, not_ready),
            ],
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.pod.get("status", {}).get("startTime") or self.start_time,
            "qosClass": self.pod.get("status", {}).get("qosClass"),
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        try:
            self.pod = raw(
                self.agent.core.patch_namespaced_pod_status, self.pod_name, self.namespace, {"status": status}
            )
        except ApiException as err:
            if err.status == 404:
                self.gone = True
            else:
                log.warning("pod %s/%s: status %s not posted: %s", self.namespace, self.pod_name, phase, err.body)


class LogServer(http.server.ThreadingHTTPServer):
    """The one kubelet endpoint worth having here: /containerLogs, so `kubectl logs [-f]` works.

    Serves TLS on 127.0.0.1 (a free port, published as the node's kubeletEndpoint) and only answers
    clients with a certificate from the cluster CA (the apiserver's --kubelet-client-certificate).
    """

    daemon_threads = True

    def __init__(self, agent: NodeAgent, cert: str, key: str, client_ca: str) -> None:
        super().__init__(("127.0.0.1", 0), _LogHandler)
        self.agent = agent
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.port = int(self.server_address[1])

    def find(self, namespace: str, pod: str, name: str) -> Container | None:
        workers = [w for w in list(self.agent.workers.values()) if (w.namespace, w.pod_name) == (namespace, pod)]
        for worker in workers:
            for container in worker.containers + worker.init_containers:
                if container.name == name:
                    return container
        return None


class _LogHandler(http.server.BaseHTTPRequestHandler):
    server: LogServer

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            self.send_error(404, "only /containerLogs/<namespace>/<pod>/<container> is served by the local node")
            return
        query = urllib.parse.parse_qs(url.query)
        container = self.server.find(parts[1], parts[2], parts[3])
        if container is None:
            self.send_error(404, f"container {parts[3]!r} of pod {parts[1]}/{parts[2]} is not on this node")
            return
        restart = container.restarts - 1 if query.get("previous", ["false"])[0] == "true" else container.restarts
        path = container.folder / f"{max(restart, 0)}.log"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        data = path.read_bytes() if path.exists() else b""
        if "tailLines" in query:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(query["tailLines"][0]) :]) if int(query["tailLines"][0]) else b""
        if "limitBytes" in query:
            data = data[: int(query["limitBytes"][0])]
        self.wfile.write(data)
        if query.get("follow", ["false"])[0] != "true":
            return
        offset = path.stat().st_size if path.exists() else 0
        while True:  # stream what the process appends until it exits (or the client goes away)
            done = "running" not in container.state
            if path.exists() and path.stat().st_size > offset:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
                offset += len(chunk)
                self.wfile.write(chunk)
                self.wfile.flush()
            elif done:
                return
            time.sleep(0.2)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("logs: " + format, *args)


def _signal_group(popen: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    if popen is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, sig)


def _parse_taint(text: str) -> Obj:
    """key[=value]:Effect"""
    key_value, _, effect = text.rpartition(":")
    key, _, value = key_value.partition("=")
    taint: Obj = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster.nodeagent", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True, help="identity system:node:<name> (group system:nodes)")
    parser.add_argument("--name", default="local-node")
    parser.add_argument("--state-dir", required=True, help="per-pod folders go under <state-dir>/pods")
    parser.add_argument("--cpu", default="2")
    parser.add_argument("--memory", default="24Gi")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs (or MIG slices) to advertise")
    parser.add_argument("--gpu-resource", default=GPU_RESOURCE, help="their extended resource name")
    parser.add_argument("--pods", type=int, default=110)
    parser.add_argument("--ephemeral-storage", default="100Gi")
    parser.add_argument("--label", action="append", default=[], help="key=value, repeatable")
    parser.add_argument("--taint", action="append", default=[], help="key=value:Effect, repeatable")
    parser.add_argument("--serving-cert", help="TLS certificate of the log endpoint (kubectl logs)")
    parser.add_argument("--serving-key")
    parser.add_argument("--client-ca", help="CA of the apiserver's kubelet client certificate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s: %(message)s")
    api = kube_config.new_client_from_config(config_file=args.kubeconfig)
    api.configuration.connection_pool_maxsize = 64  # one watch plus a request per busy pod thread
    api.rest_client = client.rest.RESTClientObject(api.configuration)
    agent = NodeAgent(api, args)

    def stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping pod processes", signum)
        agent.shutdown()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
