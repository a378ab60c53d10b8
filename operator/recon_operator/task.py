"""The task document handed to the worker (env `RECON_TASK`): the worker's `TaskDocument`, built here.

The contract is the worker's model; its JSON Schema lives in `data/task.schema.json` and the unit tests
validate every document built here against it. Credentials never enter the document.
"""

from __future__ import annotations

import json
from typing import Any

from recon_operator.presets import resolve_quality
from recon_operator.settings import OperatorSettings
from recon_operator.spec import ReconstructionJobSpec, ResourceCoordinates

TASK_API_VERSION = "recon.dev/v1alpha1"
TASK_KIND = "ReconstructionTask"


def build_task(
    spec: ReconstructionJobSpec, owner: ResourceCoordinates, attempt: int, settings: OperatorSettings
) -> dict[str, Any]:
    """The task document for one attempt (camelCase JSON object)."""
    storage: dict[str, Any] = {}
    endpoint = spec.storage.endpoint or settings.s3_endpoint
    region = spec.storage.region or settings.s3_region
    if endpoint:
        storage["endpoint"] = endpoint
    if region:
        storage["region"] = region
    gates: dict[str, Any] = {"requireWatertight": spec.gates.require_watertight, "enforce": spec.gates.enforce}
    if spec.gates.min_psnr is not None:
        gates["minPSNR"] = spec.gates.min_psnr
    if spec.gates.min_mask_iou is not None:
        gates["minMaskIoU"] = spec.gates.min_mask_iou
    return {
        "apiVersion": TASK_API_VERSION,
        "kind": TASK_KIND,
        "job": {"namespace": owner.namespace, "name": owner.name, "uid": owner.uid, "attempt": attempt},
        "input": input_document(spec),
        "output": {"uri": spec.output.uri},
        "storage": storage,
        "quality": resolve_quality(spec.quality),
        "gates": gates,
        "compute": {"gpus": spec.resources.gpus, "minGpuMemoryGiB": spec.resources.min_gpu_memory_gib},
    }


def input_document(spec: ReconstructionJobSpec) -> dict[str, Any]:
    """The task's `input`: the capture and how to read it (poses, masks: recon_worker.capture_forms)."""
    doc: dict[str, Any] = {"uri": spec.input.uri, "transformsFile": spec.input.transforms_file}
    i = spec.input
    doc |= {"poses": i.poses, "masks": i.masks, "minRegistered": i.min_registered, "matching": i.matching}
    if i.mask_model:
        doc["maskModel"] = i.mask_model
    return doc


def task_json(task: dict[str, Any]) -> str:
    """Compact, key-sorted JSON: the same spec always yields the same Job manifest."""
    return json.dumps(task, sort_keys=True, separators=(",", ":"))
