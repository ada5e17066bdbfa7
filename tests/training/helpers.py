"""Plain helpers shared by the training tests (fixtures live in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.pipeline import TrainConfig, TrainResult


@dataclass(frozen=True)
class CliOutcome:
    """Exit code and captured streams of one ``probserve`` invocation."""

    code: int
    out: str
    err: str


def tiny_config(data: str, repository: Path, **overrides: Any) -> TrainConfig:
    """A fast configuration: few members, few epochs, no progress bar, 4 rows explained."""
    settings: dict[str, Any] = {
        "data": data,
        "model_repository": repository,
        "members": 4,
        "epochs": 30,
        "patience": 10,
        # Explanations cost far more than a tiny model's training: the card's importance
        # section is tested in test_report_importance.py, elsewhere a few rows do.
        "importance_rows": 4,
        "progress": False,
    }
    settings.update(overrides)
    return TrainConfig(**settings)


def read_card(result: TrainResult) -> str:
    """The bundle's model card text."""
    return (result.bundle_path / "report" / "model_card.md").read_text()


def empty_repository(path: Path) -> bool:
    """True when the repository does not exist or holds nothing at all (not even staging)."""
    return not path.exists() or not any(path.rglob("*"))
