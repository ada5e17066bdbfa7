"""Pinned virtual environments for the third-party contenders (KServe, MLServer) under ``.bench/``.

Each lives in its own environment so its dependencies never touch ours; an environment is
reused while its stamp (the exact requirement list) matches, so only the first run installs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from service.errors import UsageError

#: Pinned, so a rerun compares with the same releases as bench/results/: the newest KServe that
#: installs with Python 3.11 here, and MLServer 1.7.1.
KSERVE_REQUIREMENT = "kserve==0.21.0"
MLSERVER_REQUIREMENT = "mlserver==1.7.1"

_STAMP = ".probserve-requirements"


def _requirements(contender: str) -> list[str]:
    # The same ONNX Runtime as ours, so the servers differ and the model call does not.
    ort = f"onnxruntime=={version('onnxruntime')}"
    if contender == "kserve":
        return [KSERVE_REQUIREMENT, ort]
    if contender == "mlserver":
        return [MLSERVER_REQUIREMENT, ort]
    raise ValueError(f"no pinned environment for {contender!r}")


def contender_python(root: Path, contender: str) -> Path:
    """The Python of ``contender``'s environment under ``root``, installed on first use."""
    requirements = _requirements(contender)
    venv = root / contender
    python = venv / "bin" / "python"
    stamp = venv / _STAMP
    wanted = "\n".join(requirements)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    base = getattr(sys, "_base_executable", None) or shutil.which("python3")
    if base is None:
        raise UsageError("cannot find a base python3 to create the benchmark environments")
    # No pip inside: our own pip installs into it (--python), which is much faster than ensurepip.
    subprocess.run([base, "-m", "venv", "--clear", "--without-pip", str(venv)], check=True)
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    done = subprocess.run(
        [*pip, "install", "--quiet", *requirements],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise UsageError(f"installing {' '.join(requirements)} failed: {tail[0]}")
    stamp.write_text(wanted)
    return python


def installed_version(python: Path, package: str) -> str:
    """``package``'s version inside the environment of ``python`` ("?" when unknown)."""
    done = subprocess.run(
        [str(python), "-c", f"from importlib.metadata import version; print(version({package!r}))"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return done.stdout.strip() or "?"
