"""A server's process tree (the process and every descendant: workers, inference pools).

Its memory and CPU time, stopping and continuing it, and waiting until it is idle.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

_PROC = Path("/proc")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Thread states that run no code: stopped, traced, zombie, dead.
_HALTED = frozenset("TtZXx")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in (_PROC / str(pid) / "task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(key):
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
    return sum(_status_kib(p, "VmRSS:") for p in tree(pid)) / 1024


def tree_peak_rss_mib(pid: int) -> float:
    """Sum of each process's own peak RSS (VmHWM) over ``pid``'s tree, in MiB: exact for one
    process, an upper bound for several (their peaks need not coincide)."""
    return sum(_status_kib(p, "VmHWM:") for p in tree(pid)) / 1024


def _cpu_s(pid: int) -> float:
    try:
        fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, ValueError, IndexError):
        return 0.0


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (all their threads)."""
    return sum(_cpu_s(p) for p in tree(pid))


def _state(pid: int) -> str:
    """The one-letter state of ``pid`` (R, S, T, Z, ...), or "" once it is gone."""
    try:
        return (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _wait_stopped(pid: int, timeout_s: float = 2.0) -> None:
    """Wait (bounded) until every thread of ``pid`` is stopped, exited or gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = [_state(int(t.name)) for t in (_PROC / str(pid) / "task").glob("*")]
        if all(not s or s in _HALTED for s in states):
            return
        time.sleep(0.001)


def _signal(pid: int, sig: int) -> bool:
    """Send ``sig`` to ``pid``; False where it is gone (or not ours)."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_tree(pid: int, stopped: list[int]) -> None:
    """SIGSTOP ``pid`` and its descendants, parents first, appending each to ``stopped`` at once.

    Each process is stopped before its children are read, so none can fork one we miss; the
    caller's list holds whatever was stopped even if this is interrupted half-way.
    """
    todo, seen = [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        if not _signal(p, signal.SIGSTOP):
            continue
        stopped.append(p)
        # A stop is delivered asynchronously; children lists are only reliable once it took.
        _wait_stopped(p)
        todo += _children(p)


def continue_all(pids: Iterable[int]) -> None:
    """SIGCONT each of ``pids`` (parents first, as stopped); gone ones are skipped."""
    for p in pids:
        _signal(p, signal.SIGCONT)


@contextmanager
def isolated(keep: int, pids: Iterable[int]) -> Iterator[None]:
    """Every process tree in ``pids`` but ``keep``'s stopped for the block, then continued.

    Continued on any exit, KeyboardInterrupt included: a stopped server never handles SIGTERM.
    """
    stopped: list[int] = []
    try:
        for pid in pids:
            if pid != keep:
                stop_tree(pid, stopped)
        yield
    finally:
        continue_all(stopped)


def settle(
    pid: int, *, window_s: float = 0.2, max_share: float = 0.02, timeout_s: float = 10.0
) -> bool:
    """Wait until ``pid``'s tree uses under ``max_share`` of a core over ``window_s``.

    True once it does; False when ``timeout_s`` passed first (the caller goes on regardless).
    """
    deadline = time.monotonic() + timeout_s
    start, before = time.monotonic(), tree_cpu_s(pid)
    while True:
        time.sleep(window_s)
        now, after = time.monotonic(), tree_cpu_s(pid)
        # CPU time counts in clock ticks (10 ms at 100 Hz): over 200 ms this means "no tick".
        if after - before < max_share * (now - start):
            return True
        if now >= deadline:
            return False
        start, before = now, after
