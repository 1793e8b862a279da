"""GPU source for sidecars that cannot see the GPU: the node's dcgm-exporter ``/metrics``.

With pod attribution on, dcgm-exporter labels each GPU's series with the ``pod`` and
``namespace`` using it; the sidecar keeps its own pod's GPUs (from the downward API). Without
attribution, ``--gpu`` selects by index or UUID, or every GPU in the body is kept. dcgm-exporter
samples every 30 s by default: this source trades resolution for access.

>>> body = ('DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-a",modelName="NVIDIA L40S"} 301.5\\n'
...         'DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-a",modelName="NVIDIA L40S"} 1024\\n')
>>> s = parse_dcgm_metrics(body, 5.0, DcgmSelector())
>>> (s.gpus[0].name, s.gpus[0].power_watts, s.gpus[0].mem_used_bytes)
('NVIDIA L40S', 301.5, 1073741824.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exporter.samples import GpuReading, GpuSample, PollError, plausible
from exporter.scrape.http_get import FetchError, HttpGetter, parse_target
from exporter.scrape.text_format import (
    MAX_SERIES,
    ParseError,
    check_line,
    parse_labels,
    parse_value,
    split_line,
)

MAX_GPUS = 64  # GPUs one body may describe for this server (a node has at most 8 or 16)

MIB = 1024.0 * 1024.0
# dcgm field -> (GpuReading field, scale to the reading's unit)
FIELDS: dict[str, tuple[str, float]] = {
    "DCGM_FI_DEV_GPU_UTIL": ("util_gpu_pct", 1.0),
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("util_mem_pct", 1.0),
    "DCGM_FI_DEV_POWER_USAGE": ("power_watts", 1.0),
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": ("power_limit_watts", 1.0),
    "DCGM_FI_DEV_FB_USED": ("mem_used_bytes", MIB),
    "DCGM_FI_DEV_GPU_TEMP": ("temperature_c", 1.0),
    "DCGM_FI_DEV_SM_CLOCK": ("sm_clock_mhz", 1.0),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("energy_mj", 1.0),
    "DCGM_FI_PROF_DRAM_ACTIVE": ("dram_bw_util_pct", 100.0),  # a 0-1 ratio on the wire
}
# Memory total = used + free (+ reserved, where dcgm-exporter reports it).
_MEMORY_PARTS = ("DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_RESERVED")


@dataclass(frozen=True, slots=True)
class DcgmSelector:
    """Which GPUs are this server's: by pod attribution, else by ``--gpu``, else all."""

    pod: str | None = None
    namespace: str | None = None
    gpus: Sequence[str] = ()

    def keeps(self, labels: dict[str, str]) -> bool:
        if self.pod is not None:
            if labels.get("pod") != self.pod:
                return False
            if self.namespace is not None and labels.get("namespace") != self.namespace:
                return False
        if self.gpus:
            return labels.get("gpu") in self.gpus or labels.get("UUID") in self.gpus
        return True


def parse_dcgm_metrics(body: str, observed_at: float, selector: DcgmSelector) -> GpuSample:
    """The selected GPUs' readings; ParseError when the body is unusable or selects nothing."""
    per_gpu: dict[str, dict[str, float]] = {}
    meta: dict[str, tuple[int, str | None]] = {}
    memory: dict[str, dict[str, float]] = {}
    read = 0
    for line in body.split("\n"):
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        name = line[:brace] if brace != -1 else line.split(" ", 1)[0]
        if name not in FIELDS and name not in _MEMORY_PARTS:
            continue
        read += 1
        if read > MAX_SERIES:
            raise ParseError("too_many_series", f"more than {MAX_SERIES} series read")
        check_line(line)
        _, label_text, rest = split_line(line)
        labels = parse_labels(label_text, line)
        if not selector.keeps(labels):
            continue
        value = parse_value(rest, line)
        if not math.isfinite(value) or value < 0:
            raise ParseError("non_finite", f"{name} is {value}")
        uuid, index = labels.get("UUID"), labels.get("gpu", "")
        if uuid is None or not index.isdigit():
            raise ParseError("malformed", f"{name} without gpu and UUID labels")
        if uuid not in meta and len(meta) >= MAX_GPUS:
            raise ParseError("too_many_series", f"more than {MAX_GPUS} GPUs selected")
        meta[uuid] = (int(index), labels.get("modelName"))
        if name in _MEMORY_PARTS:
            memory.setdefault(uuid, {})[name] = value
        if name in FIELDS:
            attr, scale = FIELDS[name]
            per_gpu.setdefault(uuid, {})[attr] = value * scale
    if not meta:
        raise ParseError("no_gpu_selected", "no dcgm-exporter GPU series matched this server")
    readings = []
    for uuid, (gpu_index, model) in sorted(meta.items(), key=lambda kv: kv[1][0]):
        values = per_gpu.get(uuid, {})
        parts = memory.get(uuid, {})
        if "DCGM_FI_DEV_FB_USED" in parts and "DCGM_FI_DEV_FB_FREE" in parts:
            values["mem_total_bytes"] = sum(parts.values()) * MIB
        readings.append(plausible(GpuReading(index=gpu_index, uuid=uuid, name=model, **values)))
    return GpuSample(observed_at, tuple(readings))


class DcgmSource:
    """Polls dcgm-exporter; every poll reads the whole body (one HTTP GET, bounded like vLLM's)."""

    def __init__(
        self,
        url: str,
        selector: DcgmSelector,
        *,
        deadline: float,
        clock: Callable[[], float],
        max_body: int = 16 * 1024 * 1024,
    ) -> None:
        self._get = HttpGetter(
            parse_target(url),
            deadline=deadline,
            max_body=max_body,
            accept="text/plain;version=0.0.4",
        )
        self.selector = selector
        self._clock = clock

    def poll(self, edge: bool) -> GpuSample | PollError:
        try:
            data = self._get.get()
            try:
                body = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise FetchError("malformed", f"body is not UTF-8 (byte {e.start})") from None
            return parse_dcgm_metrics(body, self._clock(), self.selector)
        except (FetchError, ParseError) as e:
            return PollError(self._clock(), e.reason, e.detail)

    def close(self) -> None:
        self._get.close()
