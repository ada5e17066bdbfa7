"""The on-disk model repository layout: ``<repo>/<model>/<version>/`` with integer versions."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from service.errors import UsageError

logger = logging.getLogger(__name__)

#: Prefix of a bundle being written; readers skip such directories.
STAGING_PREFIX = ".staging-"


class RepositoryError(UsageError):
    """The model repository path cannot be used (it is a file, unwritable, ...)."""


def check_not_a_file(path: Path) -> None:
    """Refuse a repository path that exists but is not a directory (a missing one is fine)."""
    if path.exists() and not path.is_dir():
        raise RepositoryError(
            f"model repository {path} is a file, not a directory: pass the directory that holds "
            "<model>/<version>/ bundles with --model-repository"
        )


def check_repository(path: Path, *, create: bool) -> Path:
    """Return ``path`` as a usable repository directory, creating it when asked."""
    check_not_a_file(path)
    if not path.exists():
        if not create:
            raise RepositoryError(f"model repository {path} does not exist")
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise RepositoryError(f"cannot create model repository {path}: {exc}") from exc
    return path


def model_names(repository: Path) -> list[str]:
    """Names of the model directories in the repository, sorted.

    A model directory that is a symlink leading outside the repository is left out (and logged):
    a bundle must not read files outside the repository.
    """
    if not repository.is_dir():
        return []
    root = repository.resolve()
    return sorted(
        p.name
        for p in repository.iterdir()
        if p.is_dir() and not p.name.startswith(".") and stays_inside(p, root)
    )


def model_versions(repository: Path, name: str) -> list[int]:
    """Versions of a model present on disk, ascending; non-integer directories are ignored, and
    so are version directories that are symlinks leading outside the repository (logged)."""
    model_dir = repository / name
    if not model_dir.is_dir():
        return []
    root = repository.resolve()
    versions = []
    for p in model_dir.iterdir():
        if p.is_dir() and p.name.isdigit() and int(p.name) > 0 and stays_inside(p, root):
            versions.append(int(p.name))
    return sorted(versions)


def stays_inside(entry: Path, root: Path) -> bool:
    """Whether ``entry`` (in the repository) resolves inside ``root`` (the resolved repository).

    Only symlinks can lead out; a symlink that does (or cannot be resolved) is refused with a
    warning, once per path so the periodic scan does not repeat it.
    """
    if not entry.is_symlink():
        return True
    try:
        inside = entry.resolve(strict=True).is_relative_to(root)
    except (OSError, RuntimeError):  # a dangling link or a symlink loop
        inside = False
    if not inside and str(entry) not in _refused_links:
        _refused_links.add(str(entry))
        # The server log, not a public answer: the operator needs the path to fix it.
        logger.warning(
            "ignoring %s: a symlink that leads outside the model repository (a bundle may not "
            "read files outside it)",
            entry,
        )
    return inside


#: Symlinks already reported, so each is logged once per process.
_refused_links: set[str] = set()


def bundle_path(repository: Path, name: str, version: int) -> Path:
    """Directory of one bundle version."""
    return repository / name / str(version)


@dataclass
class StagedBundle:
    """A bundle being written in ``path``; ``published`` is set once it is renamed into place."""

    path: Path
    published: Path | None = None


@contextmanager
def staged_bundle(repository: Path, name: str) -> Iterator[StagedBundle]:
    """Yield a staging directory for a new bundle; on success publish it atomically.

    The bundle becomes ``<repo>/<name>/<next version>`` by a rename, so readers never see a
    half-written bundle. On any exception nothing is left in the repository.
    """
    check_repository(repository, create=True)
    model_dir = repository / name
    created_model_dir = not model_dir.exists()
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=model_dir))
    staged = StagedBundle(staging)
    try:
        yield staged
        staged.published = publish_staged(staging, model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created_model_dir and not any(model_dir.iterdir()):
            model_dir.rmdir()
        raise


def publish_staged(staging: Path, model_dir: Path) -> Path:
    """Rename a staging directory to the next free version; retries if another writer won."""
    while True:
        versions = model_versions(model_dir.parent, model_dir.name)
        target = model_dir / str((versions[-1] if versions else 0) + 1)
        try:
            # os.rename onto a missing directory is atomic; if another trainer took the
            # number first it fails and we try the next one.
            os.rename(staging, target)
        except OSError:
            if target.exists():
                continue
            raise
        os.chmod(target, 0o755)
        return target
