"""The real node's container runtime: containerd 2.x (built by tools/k8s/build.sh), Debian's runc.

Everything but the image store lives under the node's state folder (state, socket, CNI config), so a
node and Docker's own containerd never meet. The root (content and snapshots: the images) is a cache
outside the repository, `<cache>/realnode-containerd-<version>`, so the 6 GB worker image is imported
once per build of it, not once per cluster (an image whose Docker image ID is there is not imported
again); one real node at a time uses it (kubeproxy.py says why), and `start` deletes any container a
node that did not stop cleanly left there. Settings that matter here (docs/local-cluster.md):
`enable_unprivileged_ports/icmp = false` (otherwise runc writes sysctls in the pod's network namespace,
which this kernel refuses, and every sandbox fails) and `restrict_oom_score_adj = true`.
Images come from `docker save` through `ctr images import` (no registry); the sandbox image is a
static `pause` built from tools/k8s/pause.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from localcluster import binaries
from localcluster.processes import ManagedProcess

RUNC = Path("/usr/sbin/runc")
SANDBOX_IMAGE = "registry.k8s.io/pause:3.10"
NAMESPACE = "k8s.io"


class ContainerdError(RuntimeError):
    """containerd could not be started or an image could not be loaded."""


def config_toml(root: Path, state: Path, socket: Path, cni_conf_dir: Path, cni_bin_dir: Path) -> str:
    return f"""\
version = 3
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{SANDBOX_IMAGE}"
[plugins."io.containerd.cri.v1.runtime"]
  enable_unprivileged_ports = false
  enable_unprivileged_icmp = false
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cni_bin_dir}"]
    conf_dir = "{cni_conf_dir}"
    max_conf_num = 1
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


class Containerd:
    """One containerd for one node, in `directory`."""

    def __init__(self, directory: Path, logs_dir: Path, run_dir: Path, name: str, root: Path | None = None) -> None:
        self.directory = directory
        self.root = root or directory / "root"
        self.socket = directory / "containerd.sock"
        self.config = directory / "config.toml"
        self.process = ManagedProcess(name, run_dir / f"{name}.pid", logs_dir / f"{name}.log")

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def start(self, cni_conf_dir: Path, cni_bin_dir: Path, timeout: float = 60.0) -> None:
        if not RUNC.is_file():
            raise ContainerdError(f"{RUNC} missing: apt-get install runc (Debian's runc has seccomp)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config.write_text(config_toml(self.root, self.directory / "state", self.socket, cni_conf_dir, cni_bin_dir))
        # The shim (containerd-shim-runc-v2) is found on PATH, beside containerd.
        env = {**os.environ, "PATH": f"{binaries.bin_dir()}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        self.process.start([str(binaries.binary("containerd")), f"--config={self.config}"], env=env)
        deadline = time.monotonic() + timeout
        while self.ctr("version", check=False).returncode != 0:
            if not self.process.running():
                raise ContainerdError(self.process.describe_exit())
            if time.monotonic() > deadline:
                raise ContainerdError(f"containerd silent for {timeout:.0f}s\n{self.process.describe_exit()}")
            time.sleep(0.3)
        self.remove_everything()  # what a node that did not stop cleanly left in a shared root

    def ctr(self, *args: str, check: bool = True, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
        argv = [str(binaries.binary("ctr")), f"--address={self.socket}", f"--namespace={NAMESPACE}", *args]
        result = subprocess.run(argv, capture_output=True, text=True, stdin=stdin, timeout=900)
        if check and result.returncode != 0:
            raise ContainerdError(f"ctr {' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")
        return result

    def import_archive(self, archive: Path) -> None:
        """An image archive (`docker save` or OCI layout tar) into the CRI's namespace."""
        with archive.open("rb") as stream:
            self.ctr("images", "import", "--no-unpack=false", "-", stdin=stream.fileno())

    def import_docker_image(self, reference: str) -> bool:
        """`docker save REFERENCE | ctr images import -`: an image the local Docker engine holds. False
        when it is already here under that name, as the same image (its Docker image ID)."""
        docker = shutil.which("docker")
        if docker is None:
            raise ContainerdError(f"cannot load {reference}: no docker command (build the images with `make images`)")
        inspected = subprocess.run(
            [docker, "image", "inspect", "-f", "{{.Id}}", reference], capture_output=True, text=True
        )
        if inspected.returncode != 0:
            raise ContainerdError(f"docker has no image {reference}: {inspected.stderr.strip()[-500:]}")
        image_id = inspected.stdout.strip()
        targets = self.image_targets()
        if reference in targets and targets[reference] == targets.get(image_id):
            return False
        with tempfile.TemporaryDirectory(dir=self.directory) as tmp:
            archive = Path(tmp) / "image.tar"
            saved = subprocess.run([docker, "save", "-o", str(archive), reference], capture_output=True, text=True)
            if saved.returncode != 0:
                raise ContainerdError(f"docker save {reference} failed: {saved.stderr.strip()[-1000:]}")
            self.import_archive(archive)
        return True

    def prune_stale_images(self) -> list[str]:
        """Delete what `stale_images` names (Docker no longer holds it); returns the names deleted.
        containerd's garbage collector then frees their content and snapshots."""
        docker = shutil.which("docker")
        if docker is None:
            return []
        targets = self.image_targets()
        names = [name for name in targets if not name.startswith("sha256:") and name != SANDBOX_IMAGE]
        stale = stale_images(targets, {name: docker_image_id(docker, name) for name in names}, keep=(SANDBOX_IMAGE,))
        for name in stale:
            self.ctr("images", "rm", name, check=False)
        return stale

    def image_targets(self) -> dict[str, str]:
        """Image name -> manifest digest. The CRI names each image by its ID (`sha256:<config digest>`,
        Docker's image ID) besides its tags."""
        lines = self.ctr("images", "ls").stdout.splitlines()[1:]
        return {fields[0]: fields[2] for fields in (line.split() for line in lines) if len(fields) >= 3}

    def has_image(self, reference: str) -> bool:
        return reference in self.ctr("images", "ls", "-q").stdout.split()

    def import_pause(self) -> None:
        """The sandbox image, made here: the static pause binary in an OCI image built from nothing."""
        if not self.has_image(SANDBOX_IMAGE):
            with tempfile.TemporaryDirectory(dir=self.directory) as tmp:
                archive = Path(tmp) / "pause.tar"
                write_single_binary_image(archive, binaries.binary("pause"), SANDBOX_IMAGE)
                self.import_archive(archive)

    def remove_everything(self) -> None:
        """Kill and delete every task and container (their shims outlive containerd otherwise)."""
        if not self.process.running():
            return
        for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            tasks = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
            for task in tasks:
                self.ctr("tasks", "delete", "--force", task, check=False)
            if not tasks:
                break
            time.sleep(0.3)
        for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "delete", container, check=False)

    def stop(self) -> None:
        self.remove_everything()
        self.process.stop(grace=10.0)
        unmount_under(self.directory)
        unmount_under(self.root)


def stale_images(targets: dict[str, str], docker_ids: dict[str, str | None], keep: tuple[str, ...] = ()) -> list[str]:
    """The images of the store (name -> manifest digest; the CRI also names each by its ID,
    `sha256:<config digest>`) that Docker no longer holds: a name whose Docker image ID (`docker_ids`,
    None when Docker has no such name) is not the image the store holds under it, then every ID name
    that no remaining name points at. So the cache holds Docker's current images, not one 6 GB worker
    per rebuild. `keep`: names never deleted (the sandbox image, made here, not in Docker)."""
    stale = [
        name
        for name, digest in targets.items()
        if not name.startswith("sha256:")
        and name not in keep
        and (docker_ids.get(name) is None or targets.get(docker_ids[name] or "") != digest)
    ]
    kept = {digest for name, digest in targets.items() if not name.startswith("sha256:") and name not in stale}
    return stale + [name for name, digest in targets.items() if name.startswith("sha256:") and digest not in kept]


def docker_image_id(docker: str, reference: str) -> str | None:
    """Docker's image ID (`sha256:<config digest>`) of `reference`, None when Docker has no such image."""
    inspected = subprocess.run([docker, "image", "inspect", "-f", "{{.Id}}", reference], capture_output=True, text=True)
    return inspected.stdout.strip() if inspected.returncode == 0 else None


def unmount_under(directory: Path) -> None:
    """Unmount whatever is still mounted below `directory` (deepest first): rootfs and sandbox mounts."""
    prefix = str(directory.resolve()) + "/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def write_single_binary_image(archive: Path, binary: Path, reference: str) -> None:
    """An OCI image archive with one layer holding `binary` as /pause, its entrypoint."""
    import hashlib
    import io
    import json

    def blob(data: bytes) -> tuple[str, bytes]:
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    layer_buffer = io.BytesIO()
    with tarfile.open(fileobj=layer_buffer, mode="w") as layer:
        info = layer.gettarinfo(str(binary), arcname="pause")
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o755
        with binary.open("rb") as handle:
            layer.addfile(info, handle)
    layer_digest, layer_bytes = blob(layer_buffer.getvalue())
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    config_digest, config_bytes = blob(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                    "size": len(layer_bytes)}],
    }  # fmt: skip
    manifest_digest, manifest_bytes = blob(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                       "size": len(manifest_bytes),
                       "annotations": {"io.containerd.image.name": reference,
                                       "org.opencontainers.image.ref.name": reference.rpartition(":")[2]}}],
    }  # fmt: skip
    with tarfile.open(archive, "w") as out:
        files = {
            "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
            "index.json": json.dumps(index).encode(),
        }
        for digest, data in (blob(layer_bytes), (config_digest, config_bytes), (manifest_digest, manifest_bytes)):
            files[f"blobs/sha256/{digest.removeprefix('sha256:')}"] = data
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
