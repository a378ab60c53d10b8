#!/usr/bin/env python3
"""`make demo`: the whole product on this machine, with no cluster, no Docker and no GPU.

    python tools/demo.py            # run the demo, then stop everything it started
    KEEP=1 python tools/demo.py     # leave the cluster, operator and S3 server running
    python tools/demo.py down       # stop what a KEEP=1 run left running

Steps: start the local control plane (tools/localcluster) with no CRD, and a moto S3 server; install
charts/recon-operator with Helm (CRD, RBAC, the operator's Deployment: the node agent runs its
`recon-operator` process under the chart's own ServiceAccount); render a capture of spot with
`recon-worker synth`; then, as a user would, `kubectl recon submit --wait` (the capture checked, uploaded
to a bucket, a CPU ReconstructionJob with the draft preset created and followed until it ends),
`kubectl recon get` and `kubectl recon fetch` (outputs verified by sha256 into .demo/output/).
Everything lives in .demo/ (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tools"), str(REPO)]

from localinstall import (  # noqa: E402
    LocalPorts,
    credentials_secret,
    install_chart,
    local_node_values,
    render_capture,
)

from localcluster import Cluster, ClusterConfig, NodeConfig, binaries  # noqa: E402
from localcluster.controlplane import free_port  # noqa: E402
from tests.s3server import TEST_CREDENTIALS, S3Server, start_s3_server  # noqa: E402

STATE = REPO / ".demo"
RELEASE, SYSTEM_NAMESPACE, NAMESPACE, JOB = "recon-operator", "recon-system", "demo", "spot"


@dataclass(frozen=True)
class DemoConfig:
    views: int = 16
    test_views: int = 4
    resolution: int = 96
    timeout_s: float = 900.0
    keep: bool = False


def say(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m" if sys.stdout.isatty() else f"==> {message}", flush=True)


class Demo:
    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.cluster = Cluster(ClusterConfig(state_dir=STATE / "cluster", crd_dir=None, nodes=[NodeConfig(gpus=0)]))
        self.s3: S3Server | None = None
        self.started = time.monotonic()

    # ---- lifecycle -------------------------------------------------------------------------------

    def run(self) -> int:
        missing = binaries.missing((*binaries.CONTROL_PLANE, "helm"))
        if missing:
            say(f"building the control-plane binaries once ({', '.join(missing)}): about 10 minutes from cold")
            subprocess.run([str(REPO / "tools" / "k8s" / "build.sh")], check=True)
        if self.cluster.status() and any(self.cluster.status().values()):
            print(f"a demo is still running in {STATE}: `python tools/demo.py down` first", file=sys.stderr)
            return 1
        STATE.mkdir(exist_ok=True)
        try:
            return self._run()
        except KeyboardInterrupt:
            say("interrupted")
            return 130
        finally:
            if self.config.keep:
                self._print_keep()
            else:
                self.stop()

    def _run(self) -> int:
        say("starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, node agent)")
        self.cluster.up()
        say("starting the S3 server (moto) on 127.0.0.1")
        self.s3 = start_s3_server(STATE / "s3")
        (STATE / "s3.pid").write_text(f"{self.s3.process.pid}\n")
        say(f"helm install {RELEASE} charts/recon-operator -n {SYSTEM_NAMESPACE}")
        ports = LocalPorts(metrics=free_port(), health=free_port())
        values = local_node_values(self.s3.endpoint, ports)
        out = install_chart(self.cluster.kubeconfig, RELEASE, SYSTEM_NAMESPACE, values, STATE / "values.yaml")
        print(out.stdout.split("NOTES:")[0].strip())
        self.kubectl("-n", SYSTEM_NAMESPACE, "get", "deploy,pods,sa,configmap", "-o", "wide", show=True)

        views = f"{self.config.views}+{self.config.test_views} views at {self.config.resolution} px"
        say(f"rendering a capture of spot ({views})")
        capture = render_capture(STATE / "capture", self.config.views, self.config.test_views, self.config.resolution)
        s3 = self.s3.client()
        s3.create_bucket(Bucket="captures")
        s3.create_bucket(Bucket="results")
        self.kubectl("create", "namespace", NAMESPACE)
        self.apply(credentials_secret("s3", TEST_CREDENTIALS))

        # From here on, the commands a user types: kubectl recon checks, uploads, submits and follows the job.
        code = self.kubectl_recon(
            "submit", str(capture.relative_to(REPO)), "--name", JOB, "--upload-to", "s3://captures/",
            "--output", f"s3://results/{JOB}/", "--preset", "draft", "--set", "resources.gpus=0",
            "--credentials-secret", "s3", "--wait", "--timeout", f"{self.config.timeout_s:.0f}",
        )  # fmt: skip
        self.kubectl("-n", NAMESPACE, "get", "rj", "-o", "wide", show=True)
        if code != 0:
            say(f"the job did not succeed (kubectl recon exited {code})")
            self.kubectl("-n", NAMESPACE, "describe", "rj", JOB, show=True)
            return 1
        self.kubectl_recon("get", JOB, "--credentials-secret", "s3")
        output = STATE / "output"
        self.kubectl_recon("fetch", JOB, str(output.relative_to(REPO)), "--credentials-secret", "s3")
        say("downloaded")
        for name in ("report.json", "report.html", "mesh.glb"):
            path = output / name
            print(f"  {path.relative_to(REPO)}" + ("" if path.exists() else "  (not published)"))
        say(f"done in {time.monotonic() - self.started:.0f} s")
        return 0

    def stop(self) -> None:
        say("stopping the cluster and the S3 server")
        if self.s3 is not None:
            self.s3.stop()
            (STATE / "s3.pid").unlink(missing_ok=True)
        self.cluster.down()

    def _print_keep(self) -> None:
        say("KEEP=1: everything stays up")
        print(f"  export KUBECONFIG={self.cluster.kubeconfig}")
        print(f"  kubectl get rj -A        # S3: {self.s3.endpoint if self.s3 else '-'} (any credentials)")
        print("  python tools/demo.py down   # stop it")

    # ---- kubectl -------------------------------------------------------------------------------

    def kubectl(self, *args: str, show: bool = False, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
        result = subprocess.run(
            [binaries.kubectl(), *args], input=stdin, capture_output=True, text=True, env=env, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        if show:
            print(result.stdout.rstrip())
        return result

    def kubectl_recon(self, *args: str) -> int:
        """`kubectl recon ARGS -n demo`, printed as a user would type it, its output shown as it comes."""
        assert self.s3 is not None
        shown = " ".join(a if " " not in a else repr(a) for a in args)
        print(f"$ kubectl recon {shown} -n {NAMESPACE}", flush=True)
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig), "AWS_ENDPOINT_URL": self.s3.endpoint}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return subprocess.run([binaries.kubectl(), "recon", *args, "-n", NAMESPACE], env=env, cwd=REPO).returncode

    def apply(self, obj: dict[str, Any]) -> None:
        self.kubectl("-n", NAMESPACE, "apply", "-f", "-", stdin=json.dumps(obj))


def down() -> int:
    """Stop what a KEEP=1 demo left running."""
    pid_file = STATE / "s3.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        pid_file.unlink()
    Cluster(ClusterConfig(state_dir=STATE / "cluster", crd_dir=None)).down()
    print(f"stopped the demo in {STATE}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=["run", "down"], default="run")
    parser.add_argument("--views", type=int, default=DemoConfig.views)
    parser.add_argument("--test-views", type=int, default=DemoConfig.test_views)
    parser.add_argument("--resolution", type=int, default=DemoConfig.resolution)
    parser.add_argument("--timeout", type=float, default=DemoConfig.timeout_s, help="seconds for the job")
    args = parser.parse_args()
    if args.command == "down":
        return down()
    keep = os.environ.get("KEEP", "") not in ("", "0")
    return Demo(DemoConfig(args.views, args.test_views, args.resolution, args.timeout, keep)).run()


if __name__ == "__main__":
    sys.exit(main())
