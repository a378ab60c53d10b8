"""GPU utilisation per stage: NVML samples taken in the background while the engine runs.

`GpuSampler` polls NVML (`nvmlDeviceGetUtilizationRates`, memory used) every `interval` seconds on a
daemon thread; the pipeline records when each stage started and ended (`time.monotonic`), and
`per_stage` (pure) assigns the samples to the stages. report.json carries the result under
`gpu.stages`: a stage that keeps the GPU idle shows it there. On the CPU, or without NVML, there is
nothing to sample and every figure is absent.

NVML's utilisation is the fraction of the last sample period (1/6 s to 1 s, by driver) in which a
kernel ran: a coarse figure, but the same one `nvidia-smi` shows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

log = logging.getLogger("recon_worker.gpu_usage")


@dataclass(frozen=True)
class Sample:
    time: float  # time.monotonic() seconds
    utilization: float  # percent
    memory_used_gb: float  # device-wide, GB (1e9 B)


class StageGpuUse(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    samples: int
    utilization_mean_percent: float
    utilization_max_percent: float
    busy_fraction: float  # share of samples with any kernel running (utilisation > 0)
    memory_used_max_gb: float


def per_stage(samples: list[Sample], spans: Mapping[str, tuple[float, float]]) -> dict[str, StageGpuUse]:
    """Utilisation of each stage from the samples taken between its start and end (stages without any: absent)."""
    out: dict[str, StageGpuUse] = {}
    for stage, (start, end) in spans.items():
        inside = [s for s in samples if start <= s.time <= end]
        if not inside:
            continue
        values = [s.utilization for s in inside]
        out[stage] = StageGpuUse(
            samples=len(inside),
            utilization_mean_percent=round(sum(values) / len(values), 1),
            utilization_max_percent=max(values),
            busy_fraction=round(sum(v > 0 for v in values) / len(values), 3),
            memory_used_max_gb=round(max(s.memory_used_gb for s in inside), 3),
        )
    return out


class GpuSampler:
    """NVML samples of one GPU on a background thread; `start` does nothing where NVML is unavailable."""

    def __init__(self, index: int = 0, interval: float = 0.1) -> None:
        self.index, self.interval = index, interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
        except Exception as exc:  # no driver, no GPU, or no nvidia-ml-py: nothing to sample
            log.info("GPU utilisation not sampled: %s", exc)
            return False
        self._thread = threading.Thread(target=self._run, args=(pynvml, handle), name="gpu-sampler", daemon=True)
        self._thread.start()
        return True

    def _run(self, pynvml: object, handle: object) -> None:
        nvml = pynvml  # the module, passed in so that the thread needs no import of its own
        try:
            while not self._stop.is_set():
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)  # type: ignore[attr-defined]
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)  # type: ignore[attr-defined]
                self.samples.append(Sample(time.monotonic(), float(rates.gpu), memory.used / 1e9))
                self._stop.wait(self.interval)
        except Exception as exc:  # a driver hiccup ends sampling, never the run
            log.warning("GPU utilisation sampling stopped: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
            try:
                import pynvml

                pynvml.nvmlShutdown()
            except Exception:
                pass
