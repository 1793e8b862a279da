"""A pod's own settings, from its annotations as Kubernetes' downward API writes them to a file.

One chart release serves many vLLM pods as a sidecar; each pod says what differs about it (its
``--max-num-seqs``, tensor parallel size, price) with annotations named
``vllm-profile-exporter/<flag>``. The kubelet writes all of the pod's annotations to one file, a
line ``key="value"`` each, the value quoted as Go's ``%q`` quotes it, and keeps the file current
while the pod runs. Only keys under the prefix are read; the rest of the file (a kubectl
last-applied annotation can be large) is skipped. Pure: text in, settings out.

>>> parse('a/b="1"\\nvllm-profile-exporter/max-num-seqs="256"')
{'a/b': '1', 'vllm-profile-exporter/max-num-seqs': '256'}
>>> settings({'vllm-profile-exporter/price': 'spot', 'team': 'x'})
{'price': 'spot'}
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PREFIX = "vllm-profile-exporter/"
# Kubernetes caps a pod's annotations at 256 KiB; Go's quoting at most quadruples a byte (\xNN).
MAX_BYTES = 4 * 256 * 1024
MAX_VALUE = 4096  # a setting's value; any real one is a number, a word or a URL

_LINE = re.compile(r'([^=\s]+)="((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", re.DOTALL)
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


class AnnotationError(ValueError):
    """A file that is not the downward API's annotations format; the message says where."""


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code[0] in "xuU":
        return chr(int(code[1:], 16))
    if len(code) == 3:  # octal, which %q never writes but Go's strings accept
        return chr(int(code, 8))
    return _SIMPLE.get(code, code)  # \\ and \" stand for themselves


def parse(text: str) -> dict[str, str]:
    """Every ``key="value"`` line of the file, values unquoted. Raises AnnotationError naming the
    first line that is not one."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.fullmatch(line)
        if m is None:
            raise AnnotationError(f'line {number}: expected key="value"')
        out[m.group(1)] = _ESCAPE.sub(_unescape, m.group(2))
    return out


def settings(found: Mapping[str, str]) -> dict[str, str]:
    """The annotations under :data:`PREFIX`, keyed by flag name (the prefix taken off). A value
    longer than :data:`MAX_VALUE` raises AnnotationError."""
    out: dict[str, str] = {}
    for key, value in found.items():
        if key.startswith(PREFIX):
            if len(value) > MAX_VALUE:
                raise AnnotationError(f"{key}: value longer than {MAX_VALUE} characters")
            out[key[len(PREFIX) :]] = value
    return out
