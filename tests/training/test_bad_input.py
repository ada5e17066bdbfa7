"""Bad input through the real CLI: exit code 2, a one-line message, nothing in the repository."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.training.helpers import CliOutcome, empty_repository

Probserve = Callable[..., CliOutcome]


def _small_table(rows: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "a": rng.normal(size=rows),
            "b": rng.choice(["x", "y"], size=rows),
            "y": rng.choice(["yes", "no"], size=rows),
        }
    )


def _assert_usage_error(outcome: CliOutcome, *fragments: str) -> None:
    assert outcome.code == 2, (outcome.out, outcome.err)
    message = outcome.err.strip()
    assert message.startswith("error: ")
    assert "\n" not in message, "the error must be one line"
    for fragment in fragments:
        assert fragment in message


def _train(probserve: Probserve, repo: Path, *args: str) -> CliOutcome:
    return probserve("train", "--model-repository", str(repo), "--epochs", "2", *args)


def test_missing_target_column(tmp_path: Path, probserve: Probserve) -> None:
    data = tmp_path / "table.csv"
    _small_table().to_csv(data, index=False)
    repo = tmp_path / "models"
    out = _train(probserve, repo, "--data", str(data), "--target", "label")
    _assert_usage_error(out, "target column 'label' is not in", "--target")
    assert empty_repository(repo)


def test_file_without_target_flag(tmp_path: Path, probserve: Probserve) -> None:
    data = tmp_path / "table.csv"
    _small_table().to_csv(data, index=False)
    repo = tmp_path / "models"
    _assert_usage_error(_train(probserve, repo, "--data", str(data)), "--target COLUMN")
    assert empty_repository(repo)


def test_unknown_file_type(tmp_path: Path, probserve: Probserve) -> None:
    data = tmp_path / "table.xlsx"
    data.write_text("a,y\n1,2\n")
    repo = tmp_path / "models"
    out = _train(probserve, repo, "--data", str(data), "--target", "y")
    _assert_usage_error(out, "unknown file type '.xlsx'", ".csv or .parquet")
    assert empty_repository(repo)


def test_empty_file(tmp_path: Path, probserve: Probserve) -> None:
    data = tmp_path / "empty.csv"
    data.write_text("")
    repo = tmp_path / "models"
    _assert_usage_error(_train(probserve, repo, "--data", str(data), "--target", "y"), "is empty")
    assert empty_repository(repo)


def test_header_only_file(tmp_path: Path, probserve: Probserve) -> None:
    data = tmp_path / "header.csv"
    data.write_text("a,b,y\n")
    repo = tmp_path / "models"
    _assert_usage_error(_train(probserve, repo, "--data", str(data), "--target", "y"), "no rows")
    assert empty_repository(repo)


def test_unreadable_file(tmp_path: Path, probserve: Probserve) -> None:
    data = tmp_path / "broken.parquet"
    data.write_bytes(b"this is not a parquet file at all" * 10)
    repo = tmp_path / "models"
    out = _train(probserve, repo, "--data", str(data), "--target", "y")
    _assert_usage_error(out, f"cannot read {data} as parquet")
    assert empty_repository(repo)


def test_missing_file(tmp_path: Path, probserve: Probserve) -> None:
    repo = tmp_path / "models"
    out = _train(probserve, repo, "--data", str(tmp_path / "nope.csv"), "--target", "y")
    _assert_usage_error(out, "does not exist")
    assert empty_repository(repo)


def test_target_with_one_class(tmp_path: Path, probserve: Probserve) -> None:
    data = tmp_path / "one.csv"
    _small_table().assign(y="same").to_csv(data, index=False)
    repo = tmp_path / "models"
    out = _train(probserve, repo, "--data", str(data), "--target", "y")
    _assert_usage_error(out, "target 'y' has one class ('same')")
    assert empty_repository(repo)


def test_text_in_a_column_declared_numeric(tmp_path: Path, probserve: Probserve) -> None:
    data = tmp_path / "text.csv"
    table = _small_table()
    table["b"] = ["12.5"] * 59 + ["twelve"]
    table.to_csv(data, index=False)
    repo = tmp_path / "models"
    out = _train(probserve, repo, "--data", str(data), "--target", "y", "--numeric", "b")
    _assert_usage_error(out, "column 'b' is numeric but holds text such as 'twelve'")
    assert empty_repository(repo)


def test_infinite_numeric_values(tmp_path: Path, probserve: Probserve) -> None:
    data = tmp_path / "inf.csv"
    table = _small_table()
    table.loc[3, "a"] = np.inf
    table.to_csv(data, index=False)
    repo = tmp_path / "models"
    out = _train(probserve, repo, "--data", str(data), "--target", "y")
    _assert_usage_error(out, "column 'a' holds 1 infinite values")
    assert empty_repository(repo)


def test_too_few_rows_for_the_splits(tmp_path: Path, probserve: Probserve) -> None:
    data = tmp_path / "few.csv"
    _small_table(rows=16).to_csv(data, index=False)
    repo = tmp_path / "models"
    out = _train(probserve, repo, "--data", str(data), "--target", "y")
    _assert_usage_error(out, "too few rows for the splits")
    assert empty_repository(repo)


def test_model_repository_is_a_file(tmp_path: Path, probserve: Probserve) -> None:
    repo = tmp_path / "models"
    repo.write_text("not a directory")
    out = _train(probserve, repo, "--data", "breast_cancer")
    _assert_usage_error(out, "is a file", "--model-repository")
    assert repo.read_text() == "not a directory"


def test_repository_flag_reads_its_environment_variable(
    tmp_path: Path, probserve: Probserve, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "models-file"
    repo.write_text("x")
    monkeypatch.setenv("PROBSERVE_MODEL_REPOSITORY", str(repo))
    out = probserve("train", "--data", "breast_cancer", "--epochs", "1")
    _assert_usage_error(out, f"model repository {repo} is a file")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_asked_without_a_gpu(tmp_path: Path, probserve: Probserve) -> None:
    repo = tmp_path / "models"
    out = _train(probserve, repo, "--data", "breast_cancer", "--device", "cuda")
    _assert_usage_error(out, "--device cuda", "no CUDA device")
    assert empty_repository(repo)


def test_console_script_is_one_command_and_exits_2(tmp_path: Path) -> None:
    # The installed console script, not the function: proves `probserve train` (not
    # `probserve train train`) and the exit code a shell sees.
    script = Path(sys.executable).parent / "probserve"
    repo = tmp_path / "models"
    done = subprocess.run(
        [str(script), "train", "--data", str(tmp_path / "x.txt"), "--model-repository", str(repo)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "unknown file type" in done.stderr
    assert empty_repository(repo)
