"""The explainer's operator-facing defaults, stdlib only: the settings read them at start-up."""

from __future__ import annotations

#: Instances one explain request may carry.
DEFAULT_MAX_ROWS = 16
#: Explain requests that may wait per model version beyond those running.
DEFAULT_QUEUE_SIZE = 4
#: Seconds from submission to result.
DEFAULT_DEADLINE_S = 30.0
#: Reference rows drawn as the background. Cost grows with it linearly and ONNX Runtime's own
#: throughput is the floor: exact enumeration of 10 features is (2^10 - 2) * 25 = 25,550 model
#: rows per instance, ~90 ms on one core for the default architecture, inside a 100 ms budget
#: per instance; 50 rows took ~180 ms (bench/results/explain-cost.md). A deployment that wants
#: a finer background sets --explain-background-rows and pays for it.
DEFAULT_BACKGROUND_ROWS = 25
