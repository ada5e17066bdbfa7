"""Memory and CPU of a server: the process and every descendant (workers, inference pools)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

_PROC = Path("/proc")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in (_PROC / str(pid) / "task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _rss_kib(pid: int) -> int:
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid: int) -> Iterator[int]:
    """``pid`` and its live descendants, each once (children read from every thread)."""
    todo, seen = [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        yield p
        todo += _children(p)


def tree_rss_mib(pid: int) -> float:
    """Sum of VmRSS over ``pid`` and its descendants, in MiB (0 where /proc is unavailable)."""
    return sum(_rss_kib(p) for p in tree(pid)) / 1024


def _cpu_s(pid: int) -> float:
    try:
        fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, ValueError, IndexError):
        return 0.0


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (all their threads)."""
    return sum(_cpu_s(p) for p in tree(pid))
