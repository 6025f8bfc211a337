"""Shared test fixtures: run the CLI in-process and capture what it prints."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

os.environ.setdefault("BRANCHNET_QUIET", "1")  # no progress bars in test logs


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capfd):
    """Call ``branchnet <args>`` in this process; returns exit code, stdout and stderr."""
    from branchnet.cli import main

    def run(*args: str) -> CliResult:
        capfd.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # pragma: no cover - main() returns codes, never exits
            code = int(exc.code or 0)
        captured = capfd.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    """A bad-input failure: exit 2, one line on stderr, no traceback, naming ``fragments``."""
    assert result.code == 2, (result.code, result.err)
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])
