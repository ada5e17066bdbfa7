"""The adapted-conformal file beside a bundle: what is accepted, what is refused, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.bundle import (
    ADAPTED_CONFORMAL_FILE,
    AdaptedConformal,
    AdaptedConformalError,
    read_adapted_conformal,
    write_adapted_conformal,
)
from service.bundle.adapted_conformal import MAX_FILE_BYTES


def adapted(**changes: object) -> AdaptedConformal:
    values: dict[str, object] = {
        "model": "toy",
        "version": 1,
        "revision": 3,
        "window_rows": 3,
        "created_at": 1.0,
        "scores": [0.1, 0.2, 0.2],
    }
    values.update(changes)
    return AdaptedConformal.model_validate(values)


def test_no_file_is_none_and_a_written_file_reads_back(tmp_path: Path) -> None:
    assert read_adapted_conformal(tmp_path, "toy", 1) is None
    write_adapted_conformal(tmp_path, adapted())
    assert read_adapted_conformal(tmp_path, "toy", 1) == adapted()
    # Replaced atomically: nothing but the file itself is left in the bundle directory.
    assert [p.name for p in tmp_path.iterdir()] == [ADAPTED_CONFORMAL_FILE]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scores": [0.2, 0.1, 0.3]}, "sorted ascending"),
        ({"scores": [0.1, 0.2, 1.5]}, "within"),
        ({"scores": [0.1, 0.2, float("nan")]}, "finite"),
        ({"window_rows": 4}, "window_rows is 4 but 3 scores"),
        ({"revision": 0}, "greater than or equal to 1"),
        ({"scores": [], "window_rows": 1}, "at least 1"),
    ],
)
def test_malformed_contents_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        adapted(**changes)


def test_a_bad_file_is_one_line_without_a_path(tmp_path: Path) -> None:
    (tmp_path / ADAPTED_CONFORMAL_FILE).write_text('{"model": "toy"')
    with pytest.raises(AdaptedConformalError, match="malformed") as caught:
        read_adapted_conformal(tmp_path, "toy", 1)
    assert str(tmp_path) not in str(caught.value) and "\n" not in str(caught.value)
    write_adapted_conformal(tmp_path, adapted(model="other"))
    with pytest.raises(AdaptedConformalError, match="written for other version 1"):
        read_adapted_conformal(tmp_path, "toy", 1)
    write_adapted_conformal(tmp_path, adapted(version=2))
    with pytest.raises(AdaptedConformalError, match="found beside toy version 1"):
        read_adapted_conformal(tmp_path, "toy", 1)


def test_a_link_out_of_the_bundle_or_an_oversized_file_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    outside = tmp_path / "elsewhere.json"
    write_adapted_conformal(tmp_path, adapted())
    (tmp_path / ADAPTED_CONFORMAL_FILE).rename(outside)
    (bundle / ADAPTED_CONFORMAL_FILE).symlink_to(outside)
    with pytest.raises(AdaptedConformalError, match="symbolic link") as caught:
        read_adapted_conformal(bundle, "toy", 1)
    assert str(tmp_path) not in str(caught.value)
    (bundle / ADAPTED_CONFORMAL_FILE).unlink()
    (bundle / ADAPTED_CONFORMAL_FILE).write_bytes(b" " * (MAX_FILE_BYTES + 1))
    with pytest.raises(AdaptedConformalError, match="larger than"):
        read_adapted_conformal(bundle, "toy", 1)
