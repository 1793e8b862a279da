"""One YAML loader for every file a user hands us (``--config``, ``--catalog-file``,
``--web.config.file``), bounded so that no file can stall or kill the process.

PyYAML's safe loader still expands aliases (a 1 KB "billion laughs" file costs minutes of CPU),
recurses once per nesting level (deep nesting raises RecursionError), and turns a 5,000-digit
number into a ValueError. Here aliases are refused, nesting and size are capped, and every
failure is a :class:`YamlError` with one line naming the file. Pure: text in, data out.

>>> load_yaml(b"a: [1, 2]", "f.yaml")
{'a': [1, 2]}
>>> load_yaml(b"a: &x [1]\\nb: *x", "f.yaml")
Traceback (most recent call last):
...
exporter.yamlsafe.YamlError: f.yaml: line 2: aliases (*name) are not accepted
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 32


class YamlError(ValueError):
    """A file that is not acceptable YAML; the message names it and, where known, the line."""


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise YamlError(f"line {event.start_mark.line + 1}: aliases (*name) are not accepted")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise YamlError(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_bounded(path: Path, origin: str, limit: int = MAX_BYTES) -> bytes:
    """A file a user named, read whole: only a regular file (a FIFO would block the reader until
    someone writes to it, ``/dev/zero`` never ends), and never more than ``limit`` bytes read.
    Raises YamlError naming ``origin``."""
    check_regular(path, origin, limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise YamlError(f"{origin}: cannot read: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # replaced since it was checked
            raise YamlError(f"{origin}: not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise YamlError(f"{origin}: larger than {limit // (1024 * 1024)} MiB")
    return data


def check_regular(path: Path, origin: str, limit: int = MAX_BYTES) -> None:
    """Refuse what is not a regular file of at most ``limit`` bytes, without opening it (for
    files another library reads: certificates and keys)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise YamlError(f"{origin}: cannot read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise YamlError(f"{origin}: not a regular file")
    if st.st_size > limit:
        raise YamlError(f"{origin}: larger than {limit // (1024 * 1024)} MiB")


def load_yaml(data: bytes, origin: str) -> Any:
    """Parse one document; raises YamlError naming ``origin``."""
    if len(data) > MAX_BYTES:
        raise YamlError(f"{origin}: larger than {MAX_BYTES // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlError(f"{origin}: not UTF-8 (byte {e.start})") from None
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except YamlError as e:
        raise YamlError(f"{origin}: {e}") from None
    except yaml.YAMLError as e:
        raise YamlError(f"{origin}: not valid YAML: {_one_line(e)}") from None
    except (ValueError, OverflowError, RecursionError) as e:
        # e.g. an integer of more digits than Python converts
        raise YamlError(f"{origin}: unreadable value: {_one_line(e)}") from None
    finally:
        loader.dispose()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
