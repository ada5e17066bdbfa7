"""The drift CLI runs OpenBLAS on one thread (its spinning workers cost CPU, saved no time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, sys
import monitoring.cli  # what `probserve drift` imports before anything loads numpy
from threadpoolctl import threadpool_info
print(json.dumps([p["num_threads"] for p in threadpool_info() if p["internal_api"] == "openblas"]))
"""


def test_drift_cli_process_has_one_blas_thread() -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    threads = json.loads(done.stdout.strip().splitlines()[-1])
    assert threads and set(threads) == {1}
