"""Locating the real tools some tests drive (promtool, prometheus)."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    """The tool's path. Missing: a failure under CI (which must install it), else a skip."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} not installed (Debian package 'prometheus'; scripts/test installs it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path
