"""The operator as its own process, as its Deployment runs it: `recon-operator` from the venv.

Its settings are read once, at start, so each test module that needs settings of its own starts its own
process. (test_operator_lifecycle runs the operator in-process instead, kopf.testing.KopfRunner, with one
set of settings for the whole session.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from localcluster import Cluster
from tests.s3server import S3Server, free_port

RECON_OPERATOR = Path(sys.executable).parent / "recon-operator"


class OperatorProcess:
    """`recon-operator` against `cluster` and the S3 server; pods run `worker` (and `poses`, when given).

    `settings` are further RECON_OPERATOR_* variables, by their full names. The log is appended to, so a
    restarted operator's lines follow the first one's.
    """

    def __init__(
        self,
        cluster: Cluster,
        s3: S3Server,
        log: Path,
        worker: list[str],
        poses: list[str] | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "RECON_OPERATOR_WORKER_COMMAND": json.dumps(worker),
            "RECON_OPERATOR_S3_ENDPOINT": s3.endpoint,
            # Ports of its own: other operators of the session (in-process ones too) hold theirs.
            "RECON_OPERATOR_METRICS_PORT": str(free_port()),
            "RECON_OPERATOR_LIVENESS_ENDPOINT": f"http://127.0.0.1:{free_port()}/healthz",
            **({"RECON_OPERATOR_POSES_COMMAND": json.dumps(poses)} if poses is not None else {}),
            **(settings or {}),
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        if self.process is not None:
            raise RuntimeError(f"the operator is running already (pid {self.process.pid}); stop it first")
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(RECON_OPERATOR)], env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def stop(self) -> None:
        """SIGTERM (kopf finishes its handlers), SIGKILL after 30 s; a stopped operator may be started again."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
