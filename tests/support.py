"""Test helpers: strict mode for external programs, free ports."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

STRICT = os.environ.get("PROBSERVE_STRICT_TESTS") == "1"


def require_program(name: str) -> str:
    """Path of an external program; skip without it, or fail under PROBSERVE_STRICT_TESTS=1."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (apt-get install {name}; .ci/run does this)"
        if STRICT:
            pytest.fail(f"PROBSERVE_STRICT_TESTS=1 and {reason}")
        pytest.skip(reason)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
