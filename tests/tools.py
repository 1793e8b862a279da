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


def _present(path: str | None, why_missing: str) -> str:
    """``path``; when None, a failure under CI (which must install the tool), else a skip."""
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(why_missing)
        pytest.skip(why_missing)
    return path


def require_tool(name: str) -> str:
    """A tool on the PATH (the Debian packages scripts/test installs)."""
    why = f"{name} not installed (Debian package 'prometheus'; scripts/test installs it)"
    return _present(shutil.which(name), why)


def fetched_tool(name: str) -> str:
    """A tool scripts/test fetches into .tools/NAME/NAME (helm, kubectl), else the PATH's."""
    local = ROOT / ".tools" / name / name
    found = str(local) if local.exists() else shutil.which(name)
    return _present(found, f"{name} not installed (scripts/test fetches it into .tools/)")


def load_script(path: Path) -> ModuleType:
    """A generator script of the repository (deploy/*/generate.py), loaded as a module."""
    spec = importlib.util.spec_from_file_location(path.parent.name + "_" + path.stem, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
