"""The ``drift run`` process: OpenBLAS on one thread, the long-lived objects of its imports and
every object at its exit left out of the cyclic collector's passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BLAS_PROBE = """
import json, sys
import monitoring.cli  # what `probserve drift` imports before anything loads numpy
from threadpoolctl import threadpool_info
print(json.dumps([p["num_threads"] for p in threadpool_info() if p["internal_api"] == "openblas"]))
"""

IMPORT_PROBE = """
import gc, json, sys
from monitoring.cli import _import_job
assert "evidently" not in sys.modules
_import_job()
print(json.dumps(
    {"evidently": "evidently" in sys.modules, "frozen": gc.get_freeze_count(), "on": gc.isenabled()}
))
"""

# Registered before the run, so it runs after the run's own exit handlers (last in, first out).
EXIT_PROBE = """
import atexit, gc, sys
from monitoring.cli import _import_job, app
_import_job()
imported = gc.get_freeze_count()
made_after = [[] for _ in range(100)]
atexit.register(
    lambda: print("frozen at exit:", gc.get_freeze_count() - imported >= 100, flush=True)
)
app(["run", "--model", "absent", "--model-repository", sys.argv[1]])
"""


def _child(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    unset = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True
    )


def test_drift_cli_process_has_one_blas_thread() -> None:
    done = _child(BLAS_PROBE)
    assert done.returncode == 0, done.stderr
    threads = json.loads(done.stdout.strip().splitlines()[-1])
    assert threads and set(threads) == {1}


def test_the_jobs_import_is_frozen_with_the_collector_back_on() -> None:
    done = _child(IMPORT_PROBE)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert state["evidently"] and state["on"]
    assert state["frozen"] > 100_000  # Evidently's classes, functions and their dicts


def test_drift_run_leaves_its_objects_uncollected_at_exit(tmp_path: Path) -> None:
    done = _child(EXIT_PROBE, str(tmp_path))
    assert done.returncode == 2  # no such model: a usage error, and still the process's end
    assert "unknown model 'absent'" in done.stderr
    assert done.stdout.strip().splitlines()[-1] == "frozen at exit: True"
