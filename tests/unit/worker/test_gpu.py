"""The device decision (pure) and, on a GPU machine, the NVML probe."""

from __future__ import annotations

import pytest

from recon_worker.gpu import DeviceChoice, GpuInfo, choose_device, cuda_usable, probe_gpus, visible
from recon_worker.task import ComputeSpec

H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", 79.6, 78.9)
BUSY = GpuInfo(1, "NVIDIA A10", 22.0, 3.5)


def compute(gpus: int, min_gib: float = 12) -> ComputeSpec:
    return ComputeSpec.model_validate({"gpus": gpus, "minGpuMemoryGiB": min_gib})


def test_cpu_task_runs_on_the_cpu_even_beside_a_gpu() -> None:
    assert choose_device(compute(0), [H100], cuda=True) == DeviceChoice("cpu", None)


def test_gpu_task_runs_on_the_first_visible_gpu() -> None:
    choice = choose_device(compute(1), [H100, BUSY], cuda=True)
    assert choice.device == "cuda" and choice.gpu == H100 and choice.gpu_name == H100.name


def test_cuda_visible_devices_selects_and_orders_gpus() -> None:
    uuids = ["GPU-aaaa-0", "GPU-bbbb-1"]
    assert visible([H100, BUSY], uuids, None) == [H100, BUSY]
    assert visible([H100, BUSY], uuids, "1") == [BUSY]
    assert visible([H100, BUSY], uuids, "GPU-bbbb,0") == [BUSY, H100]
    assert visible([H100, BUSY], uuids, "") == []
    assert visible([H100, BUSY], uuids, "0,7,1") == [H100]  # CUDA ignores everything after an invalid entry


def test_no_gpu_exits_3_with_reason_no_gpu() -> None:
    with pytest.raises(Exception) as error:
        choose_device(compute(1), [], cuda=False)
    assert (error.value.exit_code, error.value.reason) == (3, "NoGPU")  # type: ignore[attr-defined]
    assert "GPUs seen by NVML: none" in str(error.value) and "resources.gpus: 0" in str(error.value)


def test_driver_without_usable_cuda_is_no_gpu() -> None:
    with pytest.raises(Exception, match=r"GPUs seen by NVML: NVIDIA H100") as error:
        choose_device(compute(1), [H100], cuda=False)
    assert error.value.reason == "NoGPU"  # type: ignore[attr-defined]


def test_too_little_free_memory_exits_3_with_reason_insufficient_gpu_memory() -> None:
    with pytest.raises(Exception) as error:
        choose_device(compute(1, min_gib=16), [BUSY, H100], cuda=True)
    assert (error.value.exit_code, error.value.reason) == (3, "InsufficientGPUMemory")  # type: ignore[attr-defined]
    assert str(error.value) == (
        "GPU 1 (NVIDIA A10) has 3.5 GiB free of 22.0 GiB; the task needs 16 GiB (minGpuMemoryGiB)"
    )


def test_renderer_on_the_cpu_is_pytorch3d() -> None:
    assert DeviceChoice("cpu", None).renderer == "pytorch3d"


@pytest.mark.gpu
def test_probe_reports_this_machines_gpu() -> None:
    if not cuda_usable():
        pytest.skip("no CUDA here")
    gpus = probe_gpus()
    assert gpus and gpus[0].total_gib > 1 and 0 < gpus[0].free_gib <= gpus[0].total_gib
    choice = choose_device(compute(1, min_gib=1), gpus, cuda=True)
    assert choice.device == "cuda" and choice.gpu_name == gpus[0].name
