"""Locating the real tools some tests drive (promtool, prometheus, helm, kubectl) and loading the
repository's generator scripts."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from tests.paths import ROOT


def require_tool(name: str) -> str:
    """The tool's path. Missing: a failure under CI (which must install it), else a skip."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} not installed (Debian package 'prometheus'; scripts/test installs it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def fetched_tool(name: str) -> str:
    """A tool scripts/test fetches into .tools/NAME/NAME (helm, kubectl), else the one on the
    PATH. Missing: a failure under CI, else a skip."""
    local = ROOT / ".tools" / name / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        msg = f"{name} not installed (scripts/test fetches it into .tools/)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return found


def load_script(path: Path) -> ModuleType:
    """A generator script of the repository (deploy/*/generate.py), loaded as a module."""
    spec = importlib.util.spec_from_file_location(path.parent.name + "_" + path.stem, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
