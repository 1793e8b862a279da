"""Figures the real-vLLM scenarios measure (timings, vLLM-side polling cost), shown by pytest's
terminal summary and written to build/realvllm-report.json."""

from __future__ import annotations

from typing import Any

REPORT: dict[str, Any] = {}
