"""The NVML reader against a stand-in for the ``pynvml`` module (no GPU exists here).

The stand-in serves values from the real H200 probe, and can fail any call on any GPU, so the
reader's tolerance of per-call failures, lost GPUs and a missing driver is exercised.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from exporter.pipeline import Pipeline
from exporter.samples import EngineSample, GpuSample, PollError, Tick
from exporter.scrape.nvml import NoGpuSource, NvmlSource, NvmlUnavailable


class NVMLError(Exception):
    pass


class FakeNvml:
    """Just the pynvml surface the reader uses. Values from the real H200 probe fixture."""

    NVMLError = NVMLError
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_GPM_METRICS_GET_VERSION = 1
    NVML_GPM_METRIC_DRAM_BW_UTIL = 10

    def __init__(self, count: int = 2, init_error: bool = False) -> None:
        self.count = count
        self.init_error = init_error
        self.failing: set[tuple[int, str]] = set()  # (gpu, call name)
        self.calls: list[tuple[int, str]] = []
        self.gpm_reads = 0

    def _call(self, h: int, name: str, value: Any) -> Any:
        self.calls.append((h, name))
        if (h, name) in self.failing or (h, "*") in self.failing:
            raise NVMLError(f"{name} failed on GPU {h}")
        return value

    def nvmlInit(self) -> None:
        if self.init_error:
            raise NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return self._call(i, "handle", i)

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return self._call(h, "uuid", f"GPU-{h:04d}")

    def nvmlDeviceGetName(self, h: int) -> str:
        return self._call(h, "name", "NVIDIA H200")

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        return self._call(h, "limit", 700000)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return self._call(h, "mem", SimpleNamespace(used=9789374464, total=150754820096))

    def nvmlGpmQueryDeviceSupport(self, h: int) -> Any:
        return self._call(h, "gpm_support", SimpleNamespace(isSupportedDevice=1))

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return self._call(h, "util", SimpleNamespace(gpu=97, memory=88))

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return self._call(h, "power", 669492)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return self._call(h, "temp", 55)

    def nvmlDeviceGetClockInfo(self, h: int, clock: int) -> int:
        return self._call(h, "clock", 1980)

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        return self._call(h, "energy", 6844561)

    def nvmlGpmSampleAlloc(self) -> object:
        return object()

    def nvmlGpmSampleGet(self, h: int, sample: object) -> None:
        self._call(h, "gpm_sample", None)

    def nvmlGpmSampleFree(self, sample: object) -> None:
        pass

    def c_nvmlGpmMetricsGet_t(self) -> Any:
        metric = SimpleNamespace(metricId=0, nvmlReturn=0, value=0.0)
        return SimpleNamespace(
            version=0, numMetrics=0, sample1=None, sample2=None, metrics=[metric]
        )

    def nvmlGpmMetricsGet(self, req: Any) -> None:
        self.gpm_reads += 1
        assert req.metrics[0].metricId == self.NVML_GPM_METRIC_DRAM_BW_UTIL
        req.metrics[0].value = 82.9


def source(fake: FakeNvml, gpus: tuple[str, ...] = ()) -> NvmlSource:
    return NvmlSource(clock=lambda: 100.0, gpus=gpus, nvml=fake)


def test_reads_every_field_in_base_units() -> None:
    s = source(FakeNvml(count=1)).poll(edge=False)
    assert isinstance(s, GpuSample)
    (g,) = s.gpus
    assert (g.index, g.uuid, g.name) == (0, "GPU-0000", "NVIDIA H200")
    assert g.power_watts == pytest.approx(669.492)  # 669,492 mW
    assert g.power_limit_watts == 700.0
    assert (g.util_gpu_pct, g.util_mem_pct) == (97.0, 88.0)
    assert (g.mem_used_bytes, g.mem_total_bytes) == (9789374464.0, 150754820096.0)
    assert (g.temperature_c, g.sm_clock_mhz) == (55.0, 1980.0)
    assert g.energy_mj is None and g.dram_bw_util_pct is None  # not an edge


def test_slow_reads_only_at_window_edges() -> None:
    fake = FakeNvml(count=1)
    src = source(fake)
    src.poll(edge=False)
    assert (0, "energy") not in fake.calls and (0, "gpm_sample") not in fake.calls
    first = src.poll(edge=True)
    assert isinstance(first, GpuSample)
    assert first.gpus[0].energy_mj == 6844561.0
    assert first.gpus[0].dram_bw_util_pct is None  # GPM needs two samples
    second = src.poll(edge=True)
    assert isinstance(second, GpuSample)
    assert second.gpus[0].dram_bw_util_pct == pytest.approx(82.9)
    assert fake.gpm_reads == 1


def test_selection_by_index_and_uuid() -> None:
    fake = FakeNvml(count=3)
    assert [g.index for g in source(fake, ("1",)).poll(False).gpus] == [1]  # type: ignore[union-attr]
    assert [g.index for g in source(fake, ("GPU-0002",)).poll(False).gpus] == [2]  # type: ignore[union-attr]
    with pytest.raises(NvmlUnavailable, match="no GPU matches --gpu 7"):
        source(fake, ("7",))


def test_one_failing_call_leaves_only_that_field_absent() -> None:
    fake = FakeNvml(count=1)
    src = source(fake)
    fake.failing.add((0, "power"))
    s = src.poll(edge=True)
    assert isinstance(s, GpuSample)
    g = s.gpus[0]
    assert g.power_watts is None
    assert g.util_gpu_pct == 97.0 and g.energy_mj == 6844561.0


def test_a_vanished_gpu_is_left_out_and_all_gone_is_an_error() -> None:
    fake = FakeNvml(count=2)
    src = source(fake)
    fake.failing.add((0, "*"))
    s = src.poll(edge=False)
    assert isinstance(s, GpuSample) and [g.index for g in s.gpus] == [1]
    fake.failing.add((1, "*"))
    err = src.poll(edge=False)
    assert isinstance(err, PollError) and err.reason == "no_gpu_answered"
    fake.failing.clear()  # back again: recovery needs nothing
    assert isinstance(src.poll(edge=False), GpuSample)


@pytest.mark.parametrize("call", ["handle", "uuid"])
def test_a_gpu_without_a_handle_or_uuid_is_left_out_at_start(call: str) -> None:
    fake = FakeNvml(count=3)
    fake.failing.add((1, call))
    s = source(fake).poll(edge=False)
    assert isinstance(s, GpuSample) and [g.uuid for g in s.gpus] == ["GPU-0000", "GPU-0002"]
    fake.failing.update({(0, call), (2, call)})
    with pytest.raises(NvmlUnavailable, match="no GPU matches --gpu"):
        source(fake)  # no GPU could be opened at all


def test_missing_driver_is_a_normal_state() -> None:
    with pytest.raises(NvmlUnavailable, match="Driver Not Loaded"):
        source(FakeNvml(init_error=True))
    # The exporter then runs on vLLM alone and says nvml is down.
    p = Pipeline(horizon_seconds=60, poll_interval=0.25)
    none = NoGpuSource(lambda: 1.0, "unavailable", "NVML init failed")
    p.add_tick(Tick(engine=EngineSample(1.0, running=0.0), gpu=none.poll(edge=True)))
    h = p.snapshot.health["nvml"]
    assert not h.up and h.errors == {"unavailable": 1}
    assert p.snapshot.health["vllm"].up
