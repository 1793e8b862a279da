"""The parsers of option values: text in, the value out, or ValueError naming what is wrong.
Pure."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from exporter.derive.resolve import normalize_dtype
from exporter.engines import engine
from exporter.scrape.engine_fetch import split_metrics_url
from exporter.scrape.http_get import parse_target


def parse_duration(text: str) -> float:
    """``250ms``, ``2s``, ``1m``, ``1h`` or plain seconds → seconds.

    >>> parse_duration("250ms"), parse_duration("60s"), parse_duration("2m"), parse_duration("1.5")
    (0.25, 60.0, 120.0, 1.5)
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    scale = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[m.group(2)]
    return float(m.group(1)) * scale


def int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(str(text).strip())
        except ValueError:
            raise ValueError(f"must be a whole number from {low} to {high}") from None
        if not low <= v <= high:
            raise ValueError(f"must be from {low} to {high}")
        return v

    return parse


positive_int = int_in(1, 1_000_000)
tp_size = int_in(1, 4096)


def choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        v = str(text).lower()
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return v

    return parse


def gpu_list(text: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in str(text).split(",") if x.strip())
    for x in items:
        if not (x.isdigit() or x.startswith(("GPU-", "MIG-"))):
            raise ValueError(f"{x!r} is neither a GPU index nor a UUID")
    return items


def file_path(text: str) -> Path:
    return Path(str(text))


def float_in(low: float, high: float) -> Callable[[str], float]:
    """A finite number in [low, high] (NaN, infinities and overflows refused)."""

    def parse(text: str) -> float:
        try:
            v = float(str(text).strip())
        except ValueError:
            raise ValueError(f"must be a number from {low:g} to {high:g}") from None
        if not (math.isfinite(v) and low <= v <= high):
            raise ValueError(f"must be a number from {low:g} to {high:g}")
        return v

    return parse


dollars_per_hour = float_in(1e-4, 1e5)
params = float_in(1e3, 1e14)  # a thousand (test models) to a hundred trillion parameters


def duration_in(low: float, high: float, what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        v = parse_duration(text)
        if not (math.isfinite(v) and low <= v <= high):
            raise ValueError(f"{what} must be from {low:g}s to {high:g}s")
        return v

    return parse


def vllm_url(text: str) -> str:
    url = str(text).strip()
    parse_target(split_metrics_url(url)[1])  # raises ValueError naming the problem
    return url


def engine_kind(text: str) -> str:
    return engine(str(text).strip()).kind  # raises ValueError naming the kinds there are


def dcgm_url(text: str) -> str:
    url = str(text).strip()
    parse_target(url)
    return url


def listen_address(text: str) -> str:
    addr = str(text).strip()
    parse_listen_address(addr)
    return addr


def parse_listen_address(addr: str) -> tuple[str, int]:
    """``:9709`` → all interfaces; ``127.0.0.1:9709``; ``[::1]:9709``.

    >>> parse_listen_address(":9709"), parse_listen_address("[::1]:80")
    (('0.0.0.0', 9709), ('::1', 80))
    """
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected [HOST]:PORT with a port from 0 to 65535, got {addr!r}")
    if host.startswith("[") != host.endswith("]") or any(c.isspace() for c in host):
        raise ValueError(f"expected [HOST]:PORT, got {addr!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def revision(text: str) -> str:
    v = str(text).strip()  # empty: none (a pod label the downward API found missing)
    if not re.fullmatch(r"[A-Za-z0-9._-]{0,64}", v):
        raise ValueError("must be up to 64 letters, digits, '.', '_' or '-'")
    return v


def dtype(text: str) -> str:
    d = normalize_dtype(str(text))
    if d is None:
        raise ValueError("must be one of fp8, bf16, fp16, fp32 (or int8, int4, fp4)")
    return d


def model_params(text: str) -> tuple[float, float | None]:
    """``TOTAL[,ACTIVE]`` parameter counts, e.g. ``30e9,3e9``."""
    parts = [p.strip() for p in str(text).split(",")]
    if not 1 <= len(parts) <= 2:
        raise ValueError("expected TOTAL[,ACTIVE], e.g. 30e9,3e9")
    nums = [params(p) for p in parts]
    if len(nums) == 2 and nums[1] > nums[0]:
        raise ValueError("active parameters cannot exceed total parameters")
    return nums[0], nums[1] if len(nums) == 2 else None
