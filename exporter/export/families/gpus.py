"""GPUs, from NVML or dcgm-exporter: one series per GPU (``gpu``, ``UUID``)."""

from __future__ import annotations

from exporter.export.families.base import (
    GPU,
    Family,
    View,
    _per_gpu,
)

FAMILIES: tuple[Family[View], ...] = (
    Family("gpu_utilization_ratio", "gauge",
           "GPU utilization 0-1 (NVML utilization.gpu), mean over the active windows of the last "
           "{H}.", ("gpu", "UUID"), _per_gpu(lambda g: g.util_ratio), needs=GPU),
    Family("gpu_memory_controller_busy_ratio", "gauge",
           "Share of time 0-1 the GPU's memory controller was reading or writing (NVML "
           "utilization.memory), mean over the active windows of the last {H}. Not memory "
           "capacity: see gpu_memory_used_bytes.", ("gpu", "UUID"),
           _per_gpu(lambda g: g.mem_util_ratio), needs=GPU),
    Family("gpu_power_watts", "gauge",
           "GPU power draw, mean over the active windows of the last {H} (NVML power usage).",
           ("gpu", "UUID"), _per_gpu(lambda g: g.power_watts), needs=GPU),
    Family("gpu_power_limit_watts", "gauge", "Enforced GPU power limit (NVML, read once at start).",
           ("gpu", "UUID"), _per_gpu(lambda g: g.power_limit_watts), needs=GPU),
    Family("gpu_memory_used_bytes", "gauge", "GPU memory used at the latest poll.",
           ("gpu", "UUID"), _per_gpu(lambda g: g.mem_used_bytes), needs=GPU),
    Family("gpu_memory_used_peak_bytes", "gauge",
           "GPU memory used, the highest poll over the last {H} (never below the latest).",
           ("gpu", "UUID"), _per_gpu(lambda g: g.mem_used_peak_bytes), needs=GPU),
    Family("gpu_memory_total_bytes", "gauge", "GPU memory total (NVML).", ("gpu", "UUID"),
           _per_gpu(lambda g: g.mem_total_bytes), needs=GPU),
    Family("gpu_temperature_celsius", "gauge", "GPU temperature at the latest poll.",
           ("gpu", "UUID"), _per_gpu(lambda g: g.temperature_c), needs=GPU),
    Family("gpu_temperature_peak_celsius", "gauge",
           "GPU temperature, the highest poll over the last {H} (never below the latest).",
           ("gpu", "UUID"), _per_gpu(lambda g: g.temperature_peak_c), needs=GPU),
    Family("gpu_sm_clock_hertz", "gauge", "SM clock at the latest poll (NVML).", ("gpu", "UUID"),
           _per_gpu(lambda g: g.sm_clock_hz), needs=GPU),
    Family("gpu_dram_bandwidth_utilization_ratio", "gauge",
           "Measured DRAM bandwidth utilization 0-1 (NVML GPM, Hopper and newer), mean over the "
           "active windows of the last {H}. Absent where GPM is unsupported.", ("gpu", "UUID"),
           _per_gpu(lambda g: g.dram_bw_util_ratio), needs=GPU),
)  # fmt: skip
