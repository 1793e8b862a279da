from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/golden/* from the current output (review the diff before committing)",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show the real-vLLM report (timings, vLLM-side polling cost) when this run wrote one."""
    from tests.realvllm.report import REPORT

    if REPORT:
        import json

        terminalreporter.section("real-vLLM report")
        terminalreporter.write_line(json.dumps(REPORT, indent=2, sort_keys=True))
