"""Labels and annotations the operator puts on what it creates."""

from __future__ import annotations

from recon_operator.names import label_value

APP = "app.kubernetes.io"
JOB_LABEL = "recon.dev/job"  # the owning ReconstructionJob's name (shortened)
ATTEMPT_LABEL = "recon.dev/attempt"
COMPONENT_LABEL = f"{APP}/component"  # worker (the GPU Job) or poses (the CPU Job before it)
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MANAGED_BY = "recon-operator"


def child_labels(cr_name: str, component: str) -> dict[str, str]:
    return {
        f"{APP}/name": "recon-worker",
        f"{APP}/instance": label_value(cr_name),
        COMPONENT_LABEL: component,
        f"{APP}/part-of": "recon-operator",
        f"{APP}/managed-by": MANAGED_BY,
        JOB_LABEL: label_value(cr_name),
    }
