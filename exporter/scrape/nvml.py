"""GPU source over NVML (read-only: nothing is ever set).

Handles and static facts (name, UUID, power limit, memory total) are read once. The fast calls
(utilization, power, memory, temperature, SM clock: 2-70 µs each on a real H200) run every poll;
the slow ones (total energy ~4 ms, GPM sample) only at window edges. A call that fails leaves its
field absent; a GPU whose every call fails is left out of the sample.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from exporter.samples import GpuReading, GpuSample, PollError, plausible

log = logging.getLogger(__name__)


class NvmlUnavailable(Exception):
    """No driver, no library or no device: a normal state, not a crash."""


@dataclass(slots=True)
class _Gpu:
    index: int
    uuid: str
    handle: Any
    name: str | None
    power_limit_watts: float | None
    mem_total_bytes: float | None
    gpm: bool
    gpm_prev: Any = None


def _selected(index: int, uuid: str, wanted: Sequence[str]) -> bool:
    return not wanted or str(index) in wanted or uuid in wanted


class NvmlSource:
    """The real NVML reader; ``nvml`` is the ``pynvml`` module, injectable for tests."""

    def __init__(
        self, *, clock: Callable[[], float], gpus: Sequence[str] = (), nvml: Any = None
    ) -> None:
        self._clock = clock
        if nvml is None:
            try:
                nvml = importlib.import_module("pynvml")
            except ImportError as e:  # pragma: no cover - the dependency is declared
                raise NvmlUnavailable(f"pynvml not importable: {e}") from None
        self._nvml = nvml
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as e:
            raise NvmlUnavailable(f"NVML init failed: {e}") from None
        self._gpus: list[_Gpu] = []
        for i in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                uuid = nvml.nvmlDeviceGetUUID(handle)
            except nvml.NVMLError as e:
                log.warning("GPU %d: cannot get a handle: %s", i, e)
                continue
            if _selected(i, uuid, gpus):
                self._gpus.append(self._static(i, uuid, handle))
        if not self._gpus:
            self.close()
            raise NvmlUnavailable(f"no GPU matches --gpu {','.join(gpus) or '(all)'}")

    def _try(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self._nvml.NVMLError:
            return None

    def _static(self, index: int, uuid: str, handle: Any) -> _Gpu:
        n = self._nvml
        name = self._try(n.nvmlDeviceGetName, handle)
        limit = self._try(n.nvmlDeviceGetEnforcedPowerLimit, handle)
        mem = self._try(n.nvmlDeviceGetMemoryInfo, handle)
        support = self._try(n.nvmlGpmQueryDeviceSupport, handle)
        return _Gpu(
            index=index,
            uuid=uuid,
            handle=handle,
            name=name.decode() if isinstance(name, bytes) else name,
            power_limit_watts=None if limit is None else limit / 1000.0,
            mem_total_bytes=None if mem is None else float(mem.total),
            gpm=bool(support is not None and support.isSupportedDevice),
        )

    @property
    def gpu_names(self) -> list[str | None]:
        return [g.name for g in self._gpus]

    def _gpm_dram_util(self, gpu: _Gpu) -> float | None:
        """DRAM bandwidth utilization (%) between this edge's GPM sample and the previous one."""
        n = self._nvml
        try:
            sample = n.nvmlGpmSampleAlloc()
            n.nvmlGpmSampleGet(gpu.handle, sample)
        except n.NVMLError:
            return None
        prev, gpu.gpm_prev = gpu.gpm_prev, sample
        if prev is None:
            return None
        try:
            req = n.c_nvmlGpmMetricsGet_t()
            req.version = n.NVML_GPM_METRICS_GET_VERSION
            req.numMetrics = 1
            req.sample1 = prev
            req.sample2 = sample
            req.metrics[0].metricId = n.NVML_GPM_METRIC_DRAM_BW_UTIL
            n.nvmlGpmMetricsGet(req)
            metric = req.metrics[0]
            return float(metric.value) if metric.nvmlReturn == 0 else None
        except n.NVMLError:
            return None
        finally:
            self._try(n.nvmlGpmSampleFree, prev)

    def _read(self, gpu: _Gpu, edge: bool) -> GpuReading | None:
        n, h = self._nvml, gpu.handle
        util = self._try(n.nvmlDeviceGetUtilizationRates, h)
        power = self._try(n.nvmlDeviceGetPowerUsage, h)
        mem = self._try(n.nvmlDeviceGetMemoryInfo, h)
        temp = self._try(n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU)
        clock = self._try(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_SM)
        if util is None and power is None and mem is None and temp is None and clock is None:
            return None  # lost, or no longer answering
        reading = GpuReading(
            index=gpu.index,
            uuid=gpu.uuid,
            name=gpu.name,
            util_gpu_pct=None if util is None else float(util.gpu),
            util_mem_pct=None if util is None else float(util.memory),
            power_watts=None if power is None else power / 1000.0,
            power_limit_watts=gpu.power_limit_watts,
            mem_used_bytes=None if mem is None else float(mem.used),
            mem_total_bytes=float(mem.total) if mem is not None else gpu.mem_total_bytes,
            temperature_c=None if temp is None else float(temp),
            sm_clock_mhz=None if clock is None else float(clock),
        )
        if edge:
            energy = self._try(n.nvmlDeviceGetTotalEnergyConsumption, h)
            dram = self._gpm_dram_util(gpu) if gpu.gpm else None
            reading = replace(
                reading,
                energy_mj=None if energy is None else float(energy),
                dram_bw_util_pct=dram,
            )
        return plausible(reading)

    def poll(self, edge: bool) -> GpuSample | PollError:
        readings = [r for g in self._gpus if (r := self._read(g, edge)) is not None]
        now = self._clock()
        if not readings:
            return PollError(now, "no_gpu_answered", "every NVML call failed for every GPU")
        return GpuSample(now, tuple(readings))

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down a broken driver must not fail
            pass


class NoGpuSource:
    """``--gpu-source none`` or NVML unavailable: every poll says why there is no GPU data."""

    def __init__(self, clock: Callable[[], float], reason: str, detail: str) -> None:
        self._clock = clock
        self.reason = reason
        self.detail = detail

    def poll(self, edge: bool) -> GpuSample | PollError:
        return PollError(self._clock(), self.reason, self.detail)

    def close(self) -> None:
        pass
