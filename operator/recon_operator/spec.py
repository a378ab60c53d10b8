"""The ReconstructionJob spec as typed models (mirrors crds/recon.dev_reconstructionjobs.yaml).

The API server has already applied the CRD's defaults and validation; these models give the operator
typed access and the same defaults for objects built by hand (tests). Unknown fields are ignored so an
operator older than the CRD keeps working.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

API_GROUP = "recon.dev"
API_VERSION = "v1alpha1"
PLURAL = "reconstructionjobs"
KIND = "ReconstructionJob"

PresetName = Literal["draft", "standard", "high"]
Quantity = str | int


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class InputRef(_Model):
    uri: str
    transforms_file: str = "transforms.json"
    poses: Literal["auto", "given", "estimate"] = "auto"
    masks: Literal["auto", "alpha", "files", "backdrop", "model"] = "auto"
    mask_model: str | None = None
    min_registered: float = 0.8
    matching: Literal["exhaustive", "sequential"] = "exhaustive"


class OutputRef(_Model):
    uri: str


class Storage(_Model):
    endpoint: str | None = None
    region: str | None = None
    credentials_secret: str | None = None


class Quality(_Model):
    preset: PresetName = "standard"
    # Overrides stay as camelCase mappings: they are deep-merged onto the preset, not interpreted here.
    reconstruction: dict[str, Any] = Field(default_factory=dict)
    refinement: dict[str, Any] = Field(default_factory=dict)
    export: dict[str, Any] = Field(default_factory=dict)


class Gates(_Model):
    min_psnr: float | None = Field(None, alias="minPSNR")
    min_mask_iou: float | None = Field(None, alias="minMaskIoU")
    require_watertight: bool = True
    enforce: bool = False


class Resources(_Model):
    gpus: int = Field(1, ge=0)
    gpu_resource_name: str = "nvidia.com/gpu"
    min_gpu_memory_gib: float = Field(12, alias="minGpuMemoryGiB")
    cpu: Quantity | None = None
    memory: Quantity | None = None
    shm_size: Quantity = "8Gi"


class Scheduling(_Model):
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = None
    runtime_class_name: str | None = None
    queue_name: str | None = None


class ReconstructionJobSpec(_Model):
    input: InputRef
    output: OutputRef
    storage: Storage = Field(default_factory=Storage)
    quality: Quality = Field(default_factory=Quality)
    gates: Gates = Field(default_factory=lambda: Gates.model_validate({}))
    resources: Resources = Field(default_factory=lambda: Resources.model_validate({}))
    scheduling: Scheduling = Field(default_factory=Scheduling)
    backoff_limit: int = Field(2, ge=0)
    active_deadline_seconds: int = Field(14400, ge=1)
    pending_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None
    suspend: bool = False
    cancel: bool = False
    image: str | None = None


class ResourceCoordinates(_Model):
    """Where a ReconstructionJob lives; what children and the task document point back to."""

    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, body: Any) -> ResourceCoordinates:
        meta = body["metadata"]
        return cls(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
