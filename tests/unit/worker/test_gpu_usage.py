"""GPU utilisation per stage: samples fall into the stage that ran when they were taken."""

from __future__ import annotations

import math

from recon_worker.gpu_usage import GpuSampler, Sample, per_stage


def test_samples_are_assigned_to_the_stage_that_was_running() -> None:
    samples = [Sample(t, u, 1.0 + t) for t, u in [(0.5, 0), (1.5, 80), (2.5, 100), (3.5, 0), (4.5, 40)]]
    spans = {"refine": (1.0, 3.0), "texture": (3.0, 4.0), "export": (4.0, math.inf), "fetch": (9.0, 10.0)}
    use = per_stage(samples, spans)
    assert set(use) == {"refine", "texture", "export"}  # fetch: no sample, no figure
    assert use["refine"].samples == 2 and use["refine"].utilization_mean_percent == 90.0
    assert use["refine"].utilization_max_percent == 100 and use["refine"].busy_fraction == 1.0
    assert use["texture"].busy_fraction == 0.0 and use["texture"].memory_used_max_gb == 4.5
    assert use["export"].model_dump(by_alias=True)["utilizationMeanPercent"] == 40.0


def test_the_sampler_does_nothing_without_nvml_or_a_gpu() -> None:
    sampler = GpuSampler(index=999)  # no GPU 999 anywhere: NVML (or its absence) refuses
    assert sampler.start() is False
    sampler.stop()
    assert sampler.samples == []
