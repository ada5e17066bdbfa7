"""The root command: subcommands found, exit codes 0/1/2, no traceback for the user."""

from __future__ import annotations

import pytest

import service.serve
from service.cli import main


def test_help_lists_every_part_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("serve", "train", "bench"):
        assert command in out


def test_unknown_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bogus"]) == 2
    assert "No such command 'bogus'" in capsys.readouterr().err


def test_main_can_run_twice_in_one_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert main(["--help"]) == 0
    assert capsys.readouterr().out.count("train") >= 2


def test_unexpected_error_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> None:
        raise RuntimeError("disk on fire")

    # A fault we cannot cause for real on demand: a command crashing with a bug.
    monkeypatch.setattr(service.serve, "serve", broken)
    monkeypatch.delenv("PROBSERVE_TRACEBACK", raising=False)
    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "error: unexpected RuntimeError: disk on fire (set PROBSERVE_TRACEBACK=1 to see where)"
    ]
