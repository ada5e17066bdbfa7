"""``probserve train``: parse flags, call :func:`training.pipeline.train`, print the outcome.

Every flag also reads ``PROBSERVE_<FLAG>`` (``--model-repository`` <- PROBSERVE_MODEL_REPOSITORY).
Input problems raise :class:`service.errors.UsageError`; the root CLI prints them on one line and
exits with code 2.
The entry point ``training.cli:app`` is the plain command function: the root CLI registers
each ``probserve.commands`` entry point as one command.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from service.bundle import MAX_SENSITIVE_GROUPS
from service.errors import UsageError
from training.pipeline import TrainConfig, headline, train
from training.sensitive import split_names

_DEFAULTS = TrainConfig(data="synthetic")


class DeviceChoice(StrEnum):
    """Where to train."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class OptimizerChoice(StrEnum):
    """Optimiser of the members."""

    adam = "adam"
    sgd = "sgd"


def _env(flag: str) -> str:
    return "PROBSERVE_" + flag.upper().replace("-", "_")


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        sizes = ()
    if not sizes or any(s < 1 for s in sizes):
        raise UsageError(
            f"--hidden must be comma-separated positive layer sizes such as 64,64; got {text!r}"
        )
    return sizes


def train_command(
    data: Annotated[
        str,
        typer.Option(
            help="breast_cancer, digits, synthetic, or a .csv/.parquet path", envvar=_env("data")
        ),
    ],
    target: Annotated[
        str | None, typer.Option(help="label column of a data file", envvar=_env("target"))
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="model name [default: the data file's stem or builtin name]", envvar=_env("name")
        ),
    ] = None,
    model_repository: Annotated[
        Path, typer.Option(help="model repository directory", envvar=_env("model-repository"))
    ] = Path("models"),
    members: Annotated[
        int, typer.Option(min=2, help="ensemble members K", envvar=_env("members"))
    ] = _DEFAULTS.members,
    epochs: Annotated[
        int, typer.Option(min=1, help="maximum epochs", envvar=_env("epochs"))
    ] = _DEFAULTS.epochs,
    seed: Annotated[
        int, typer.Option(help="seed of splits, initialisation, resamples", envvar=_env("seed"))
    ] = _DEFAULTS.seed,
    device: Annotated[
        DeviceChoice,
        typer.Option(help="auto picks cuda when PyTorch sees a GPU", envvar=_env("device")),
    ] = DeviceChoice.auto,
    hidden: Annotated[
        str, typer.Option(help="hidden layer sizes, comma-separated", envvar=_env("hidden"))
    ] = ",".join(map(str, _DEFAULTS.hidden)),
    learning_rate: Annotated[
        float, typer.Option(min=0.0, help="optimiser learning rate", envvar=_env("learning-rate"))
    ] = _DEFAULTS.learning_rate,
    weight_decay: Annotated[
        float,
        typer.Option(
            min=0.0, help="weight decay (decoupled for adam)", envvar=_env("weight-decay")
        ),
    ] = _DEFAULTS.weight_decay,
    optimizer: Annotated[
        OptimizerChoice,
        typer.Option(help="adam (AdamW) or sgd (momentum 0.9)", envvar=_env("optimizer")),
    ] = OptimizerChoice.adam,
    batch_size: Annotated[
        int, typer.Option(min=1, help="rows per member per step", envvar=_env("batch-size"))
    ] = _DEFAULTS.batch_size,
    patience: Annotated[
        int,
        typer.Option(
            min=0, help="early-stopping patience in epochs (0: off)", envvar=_env("patience")
        ),
    ] = _DEFAULTS.patience,
    min_improvement: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="relative validation-loss drop that resets the patience counter",
            envvar=_env("min_improvement"),
        ),
    ] = _DEFAULTS.min_improvement,
    validation_size: Annotated[
        float, typer.Option(help="share of rows for validation", envvar=_env("validation-size"))
    ] = (_DEFAULTS.validation_size),
    calibration_size: Annotated[
        float,
        typer.Option(
            help="share of rows for conformal calibration", envvar=_env("calibration-size")
        ),
    ] = (_DEFAULTS.calibration_size),
    test_size: Annotated[
        float, typer.Option(help="share of rows for the test figures", envvar=_env("test-size"))
    ] = (_DEFAULTS.test_size),
    synthetic_rows: Annotated[
        int, typer.Option(min=1, help="rows of --data synthetic", envvar=_env("synthetic-rows"))
    ] = _DEFAULTS.synthetic_rows,
    synthetic_output: Annotated[
        Path | None,
        typer.Option(
            help="also write the synthetic data (CSV) here, true probabilities next to it",
            envvar=_env("synthetic-output"),
        ),
    ] = None,
    numeric: Annotated[
        list[str] | None,
        typer.Option(help="treat this column as numeric (repeatable)", envvar=_env("numeric")),
    ] = None,
    categorical: Annotated[
        list[str] | None,
        typer.Option(
            help="treat this column as categorical (repeatable)", envvar=_env("categorical")
        ),
    ] = None,
    sensitive: Annotated[
        str | None,
        typer.Option(
            help="columns to slice fairness figures by, comma-separated (categorical, or at "
            f"most {MAX_SENSITIVE_GROUPS} distinct values)",
            envvar=_env("sensitive"),
        ),
    ] = None,
    exclude: Annotated[
        str | None,
        typer.Option(
            help="columns kept out of the model's inputs, comma-separated (still sliceable "
            "with --sensitive)",
            envvar=_env("exclude"),
        ),
    ] = None,
    importance_rows: Annotated[
        int,
        typer.Option(
            min=0,
            help="test rows explained for the model card's global feature importance "
            "(0: no importance section)",
            envvar=_env("importance-rows"),
        ),
    ] = _DEFAULTS.importance_rows,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="progress bar [default: on a terminal]",
            envvar=_env("progress"),
        ),
    ] = None,
) -> None:
    """Train a deep ensemble and publish it as the next version of a model bundle."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    try:
        config = TrainConfig(
            data=data,
            target=target,
            name=name,
            model_repository=model_repository,
            members=members,
            epochs=epochs,
            seed=seed,
            device=device.value,
            hidden=_hidden(hidden),
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            optimizer=optimizer.value,
            batch_size=batch_size,
            patience=patience,
            min_improvement=min_improvement,
            validation_size=validation_size,
            calibration_size=calibration_size,
            test_size=test_size,
            synthetic_rows=synthetic_rows,
            synthetic_output=synthetic_output,
            numeric=tuple(numeric or ()),
            categorical=tuple(categorical or ()),
            sensitive=split_names(sensitive, "--sensitive"),
            exclude=split_names(exclude, "--exclude"),
            importance_rows=importance_rows,
            progress=progress,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"--{where.replace('_', '-')}: {first['msg']}") from exc
    result = train(config)
    typer.echo(f"bundle: {result.bundle_path}")
    typer.echo(f"test: {headline(result.metrics)}")


#: Entry point of ``probserve train`` (see the module docstring for why it is a function).
app = train_command

#: The same command as a standalone Typer application.
if __name__ == "__main__":
    import sys

    from service.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
