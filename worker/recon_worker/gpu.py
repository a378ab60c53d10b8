"""Where the worker computes: the GPU check at start (NVML) and the device decision.

`probe_gpus` asks NVML (nvidia-ml-py) what the node has; `choose_device` is the pure decision:
- `compute.gpus == 0`: the CPU, always (the pod did not ask for a GPU, so it must not use one);
- otherwise CUDA, if it is usable and cuda:0 has `minGpuMemoryGiB` free, else exit 3 (NodeUnsuitable)
  with reason NoGPU or InsufficientGPUMemory, so the Job retries on another node.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Literal

from recon_worker.errors import NodeUnsuitable
from recon_worker.task import ComputeSpec

log = logging.getLogger("recon_worker.gpu")
GiB = 1024**3


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    total_gib: float
    free_gib: float


@dataclass(frozen=True)
class DeviceChoice:
    device: Literal["cuda", "cpu"]
    gpu: GpuInfo | None  # the GPU used (cuda:0), None on the CPU

    @property
    def renderer(self) -> Literal["nvdiffrast", "pytorch3d"]:
        """The backend the engine's `auto` choice picks: nvdiffrast on CUDA when it is installed."""
        if self.device == "cuda" and importlib.util.find_spec("nvdiffrast") is not None:
            return "nvdiffrast"
        return "pytorch3d"

    @property
    def gpu_name(self) -> str:
        return self.gpu.name if self.gpu else "cpu"


def visible(gpus: list[GpuInfo], uuids: list[str], cuda_visible_devices: str | None) -> list[GpuInfo]:
    """The GPUs CUDA will number 0, 1, ... under CUDA_VISIBLE_DEVICES (indices or UUIDs), in its order.

    NVML lists every GPU of the node whatever CUDA_VISIBLE_DEVICES says; in a Kubernetes container the
    runtime hides the others, but a process started with only the variable set (the local cluster's node
    agent, a developer's shell) must apply it itself.
    """
    if cuda_visible_devices is None:
        return gpus
    chosen = []
    for entry in (e.strip() for e in cuda_visible_devices.split(",") if e.strip()):
        match = [g for g, u in zip(gpus, uuids, strict=True) if entry == str(g.index) or u.startswith(entry)]
        if not match:
            break  # CUDA stops at the first invalid entry
        chosen.append(match[0])
    return chosen


def probe_gpus() -> list[GpuInfo]:
    """The GPUs this process may use, with their free memory, first the one CUDA calls cuda:0; [] without a driver."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.info("NVML unavailable (%s): no GPU", exc)
        return []
    try:
        gpus, uuids = [], []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            uuids.append(uuid.decode() if isinstance(uuid, bytes) else str(uuid))
            gpus.append(GpuInfo(index, name, memory.total / GiB, memory.free / GiB))
        return visible(gpus, uuids, os.environ.get("CUDA_VISIBLE_DEVICES"))
    finally:
        pynvml.nvmlShutdown()


def cuda_usable() -> bool:
    """PyTorch can run CUDA kernels here (a driver alone is not enough: the build must match it)."""
    import torch

    return bool(torch.cuda.is_available())


def choose_device(compute: ComputeSpec, gpus: list[GpuInfo], cuda: bool) -> DeviceChoice:
    """Pure: the device for this task on this node, or NodeUnsuitable (exit 3)."""
    if compute.gpus == 0:
        return DeviceChoice("cpu", None)
    if not gpus or not cuda:
        seen = ", ".join(g.name for g in gpus) or "none"
        raise NodeUnsuitable(
            f"the task needs {compute.gpus} GPU(s) but CUDA is not usable on this node (GPUs seen by NVML: {seen}); "
            "set resources.gpus: 0 to run on the CPU",
            reason="NoGPU",
        )
    # The engine computes on cuda:0, the first visible GPU: that is the one whose memory counts.
    gpu = gpus[0]
    if gpu.free_gib < compute.min_gpu_memory_gib:
        raise NodeUnsuitable(
            f"GPU {gpu.index} ({gpu.name}) has {gpu.free_gib:.1f} GiB free of {gpu.total_gib:.1f} GiB; "
            f"the task needs {compute.min_gpu_memory_gib:g} GiB (minGpuMemoryGiB)",
            reason="InsufficientGPUMemory",
        )
    return DeviceChoice("cuda", gpu)


def detect_device(compute: ComputeSpec) -> DeviceChoice:
    """`choose_device` for this node; CUDA is only probed when the task wants a GPU."""
    if compute.gpus == 0:
        return DeviceChoice("cpu", None)
    return choose_device(compute, probe_gpus(), cuda_usable())
