"""Strict catalog loading: YAML text → frozen entries, or an error naming file, entry and key.

Pure: the caller reads the files and passes their text with a name for messages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from exporter.yamlsafe import YamlError, load_yaml

DTYPES = ("fp4", "int4", "fp8", "int8", "bf16", "fp16", "fp32")


class CatalogError(ValueError):
    """An invalid catalog; the message names the file, entry and key."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """Tokens that must all be present, and tokens that must be absent."""

    present: frozenset[str]
    absent: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Pattern:
        words = text.lower().split()
        return cls(
            frozenset(w for w in words if not w.startswith("!")),
            frozenset(w[1:] for w in words if w.startswith("!")),
        )


@dataclass(frozen=True, slots=True)
class GpuSpec:
    name: str
    arch: str
    match: tuple[Pattern, ...]
    fp32_tflops: float | None = None
    bf16_tflops: float | None = None
    mem_bw_gbps: float | None = None
    price_on_demand: float | None = None
    price_spot: float | None = None
    sources: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    match: tuple[Pattern, ...]
    params_b: float
    active_params_b: float | None = None
    dtype: str | None = None
    source: str = ""

    @property
    def moe(self) -> bool:
        return self.active_params_b is not None


@dataclass(frozen=True, slots=True)
class Catalog:
    gpus: Mapping[str, GpuSpec] = field(default_factory=dict)
    models: Mapping[str, ModelSpec] = field(default_factory=dict)

    def merged(self, other: Catalog) -> Catalog:
        """``other``'s entries added, replacing same-named ones."""
        return Catalog(
            MappingProxyType({**self.gpus, **other.gpus}),
            MappingProxyType({**self.models, **other.models}),
        )


_GPU_NUMBERS = ("fp32_tflops", "bf16_tflops", "mem_bw_gbps", "price_on_demand", "price_spot")
# What each number may be: anything outside is a typo or a unit mistake, never hardware.
_RANGES: dict[str, tuple[float, float]] = {
    "fp32_tflops": (0.01, 1e5),
    "bf16_tflops": (0.01, 1e6),
    "mem_bw_gbps": (1.0, 1e6),
    "price_on_demand": (1e-4, 1e4),
    "price_spot": (1e-4, 1e4),
    "params_b": (1e-6, 1e5),  # a thousand (test models) to a hundred trillion parameters
    "active_params_b": (1e-6, 1e5),
}
_GPU_KEYS = {"arch", "match", "sources", *_GPU_NUMBERS}
_MODEL_KEYS = {"match", "params_b", "active_params_b", "dtype", "source"}


class _Check:
    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, where: str, msg: str) -> CatalogError:
        return CatalogError(f"{self.origin}: {where}: {msg}")

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a mapping, got {type(value).__name__}")
        for k in value:
            if not isinstance(k, str):
                raise self.fail(where, f"key {k!r} must be a string")
        return value

    def keys(self, value: dict[str, Any], allowed: set[str], where: str) -> None:
        for k in value:
            if k not in allowed:
                raise self.fail(f"{where}.{k}", "unknown key")

    def number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, f"must be a number, got {value!r}")
        if not value > 0:
            raise self.fail(where, f"must be > 0, got {value!r}")
        low, high = _RANGES[where.rsplit(".", 1)[-1]]
        try:
            v = float(value)
        except OverflowError:
            v = math.inf
        if not (math.isfinite(v) and low <= v <= high):
            raise self.fail(where, f"must be from {low:g} to {high:g}, got {value!r}")
        return v

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"must be a non-empty string, got {value!r}")
        return value

    def patterns(self, value: Any, where: str) -> tuple[Pattern, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(where, "must be a non-empty list of token patterns")
        out = []
        for i, item in enumerate(value):
            p = Pattern.parse(self.text(item, f"{where}[{i}]"))
            if not p.present:
                raise self.fail(f"{where}[{i}]", "needs at least one token that must be present")
            out.append(p)
        return tuple(out)


def parse_catalog(text: str | bytes, origin: str) -> Catalog:
    """Parse and validate one catalog file (``gpus:`` and/or ``models:`` sections)."""
    c = _Check(origin)
    try:
        doc = load_yaml(text.encode("utf-8") if isinstance(text, str) else text, origin)
    except YamlError as e:
        raise CatalogError(str(e)) from None
    if doc is None:
        return Catalog()
    doc = c.mapping(doc, "top level")
    c.keys(doc, {"gpus", "models"}, "top level")
    gpus: dict[str, GpuSpec] = {}
    for name, raw in c.mapping(doc.get("gpus") or {}, "gpus").items():
        where = f"gpus.{name}"
        entry = c.mapping(raw, where)
        c.keys(entry, _GPU_KEYS, where)
        if "match" not in entry:
            raise c.fail(f"{where}.match", "missing")
        numbers = {k: c.number(entry[k], f"{where}.{k}") for k in _GPU_NUMBERS if k in entry}
        sources = c.mapping(entry.get("sources") or {}, f"{where}.sources")
        for k, v in sources.items():
            c.text(v, f"{where}.sources.{k}")
        gpus[name] = GpuSpec(
            name=name,
            arch=c.text(entry.get("arch", "unknown"), f"{where}.arch"),
            match=c.patterns(entry["match"], f"{where}.match"),
            sources=MappingProxyType(dict(sources)),
            **numbers,
        )
    models: dict[str, ModelSpec] = {}
    for name, raw in c.mapping(doc.get("models") or {}, "models").items():
        where = f"models.{name}"
        entry = c.mapping(raw, where)
        c.keys(entry, _MODEL_KEYS, where)
        for required in ("match", "params_b"):
            if required not in entry:
                raise c.fail(f"{where}.{required}", "missing")
        dtype = entry.get("dtype")
        if dtype is not None and dtype not in DTYPES:
            raise c.fail(f"{where}.dtype", f"must be one of {', '.join(DTYPES)}, got {dtype!r}")
        active = entry.get("active_params_b")
        models[name] = ModelSpec(
            name=name,
            match=c.patterns(entry["match"], f"{where}.match"),
            params_b=c.number(entry["params_b"], f"{where}.params_b"),
            active_params_b=None
            if active is None
            else c.number(active, f"{where}.active_params_b"),
            dtype=dtype,
            source=str(entry.get("source", "")),
        )
    return Catalog(MappingProxyType(gpus), MappingProxyType(models))
