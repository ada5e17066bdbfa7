"""The root command: subcommands found, exit codes 0/1/2, no traceback for the user."""

from __future__ import annotations

import subprocess
import sys

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


def _run_cli(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_serve_imports_nothing_of_training() -> None:
    # The serving image installs only the cpu extra: `probserve serve` must not import the
    # trainer (torch, scikit-learn, matplotlib) just to start.
    done = _run_cli(
        "import sys\n"
        "from service.cli import main\n"
        "code = main(['serve', '--help'])\n"
        "names = ('torch', 'sklearn', 'matplotlib', 'training')\n"
        "heavy = sorted(m for m in names if m in sys.modules)\n"
        "print('HEAVY', heavy, code)\n"
    )
    assert "HEAVY [] 0" in done.stdout, done.stdout + done.stderr


def test_missing_extra_is_one_line_naming_the_extra() -> None:
    # sys.modules[name] = None makes `import torch` fail as it does where torch is absent.
    done = _run_cli(
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from service.cli import main\n"
        "sys.exit(main(['train', '--data', 'breast_cancer', '--epochs', '1']))\n"
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "'probserve train' needs the Python package torch" in lines[0]
    assert "probserve[cpu,data,train]" in lines[0]


def test_bench_outside_a_checkout_says_to_run_it_from_one() -> None:
    # An installed wheel or image has the entry point but not the bench package.
    done = _run_cli(
        "import sys\n"
        "sys.modules['bench'] = None\n"
        "from service.cli import main\n"
        "sys.exit(main(['bench', '--contenders', 'all']))\n"
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "'probserve bench' runs from a source checkout" in lines[0]


def test_a_subcommand_exit_code_is_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    def exits_three() -> None:
        raise typer.Exit(3)

    # A command that ends with typer.Exit(3) (drift: "not enough rows") must exit 3, not 0.
    monkeypatch.setattr(service.serve, "serve", exits_three)
    assert main(["serve"]) == 3


def test_serving_imports_no_pandas_scipy_stats_or_psycopg() -> None:
    # Memory of the serving process (its budget is 200 MiB): the app, its telemetry and the
    # Parquet prediction log need none of these (pyarrow itself they do: it writes the log, but
    # its dataset layer is the readers'); the drift job and PostgreSQL pay for them.
    done = _run_cli(
        "import sys\n"
        "import service.http.app, service.telemetry.build, service.predlog\n"
        "names = ('pandas', 'scipy.stats', 'psycopg', 'pyarrow.dataset', 'torch')\n"
        "print('HEAVY', sorted(m for m in names if m in sys.modules))\n"
    )
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr
