"""Each subcommand's --help offers its own flags only, with allowed values and human defaults."""

from __future__ import annotations

import re

import pytest

from exporter.cli import build_parser
from exporter.options import OPTIONS


def help_of(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[command].format_help()  # type: ignore[union-attr,index]


def flags(text: str) -> set[str]:
    return set(re.findall(r"^\s+(--[a-z][a-z.-]+)", text, flags=re.M))


def test_each_command_offers_its_own_flags() -> None:
    serve, record, replay, diagnose = (help_of(c) for c in ("serve", "record", "replay",
                                                            "diagnose"))  # fmt: skip
    # Only serve listens.
    assert "--web.listen-address" in flags(serve) and "--web.config.file" in flags(serve)
    for other in (record, replay, diagnose):
        assert not {"--web.listen-address", "--web.config.file"} & flags(other)
    # Replay reads a file: no vLLM URL, no GPU selection, no dcgm target.
    assert not {"--vllm-url", "--gpu", "--dcgm-url", "--dcgm-pod"} & flags(replay)
    # Record writes raw polls: nothing derived from them is configured there.
    assert not {"--cost-per-hour", "--catalog-file", "--model-params", "--horizon"} & flags(record)
    assert {"--vllm-url", "--poll-interval", "--calm-poll-interval", "--gpu-source"} <= flags(
        record
    )
    # Every option is offered somewhere.
    offered = flags(serve) | flags(record) | flags(replay) | flags(diagnose)
    assert {f"--{o.flag}" for o in OPTIONS} <= offered


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("serve", ["default 250ms]", "default 1s]", "default 60s]", "--gpu-source {nvml,dcgm,none}",
                   "--price {on-demand,spot}", "default all visible]"]),
        ("record", ["(default 60s)", "default 250ms]"]),
        ("diagnose", ["(default 2m)"]),
    ],
)  # fmt: skip
def test_defaults_read_as_a_person_types_them(command: str, expected: list[str]) -> None:
    text = " ".join(help_of(command).split())  # argparse wraps lines
    for snippet in expected:
        assert snippet in text, snippet
    assert "default 0.25" not in text and "default 60.0" not in text and "()" not in text
