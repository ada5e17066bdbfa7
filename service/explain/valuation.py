"""Coalition values: the expected member outputs with the instance's values on S, background off S.

For coalition S and instance x, ``v(S) = mean_b f(x_S, b_notS)`` over the background rows b
(interventional: features off S keep the background row's values, whatever x holds). The rows
are built with numpy gathers, whole columns at a time, and run through the model in chunks of
about ``chunk_rows`` rows, several coalitions (and instances) per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from service.explain.background import Background
    from service.explain.coalitions import PermutationPlan

#: The model as the engine sees it: graph input columns (feature -> [N, 1]) to member
#: probabilities [N, K, C]. ``LoadedModel.run`` is one.
ModelFunction = Callable[[Mapping[str, NDArray[np.generic]]], NDArray[np.float32]]

#: Rows per model call: large enough that ONNX Runtime's per-call cost vanishes, small enough to
#: stay in cache (one core, default architecture, 10 features exact: 181 ms per instance at
#: 1,024 rows a call, 186 at 2,048, 212 at 4,096, 290 at 8,192).
DEFAULT_CHUNK_ROWS = 1024


class Stop:
    """When to abandon a computation: a deadline (perf_counter seconds) and a cancel flag."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline
        self.cancelled = False

    def reached(self) -> bool:
        """True once the deadline has passed or the caller cancelled."""
        return self.cancelled or (
            self.deadline is not None and time.perf_counter() >= self.deadline
        )


class Stopped(Exception):
    """Raised between chunks when :meth:`Stop.reached`; the caller turns it into its own error."""


def coalition_values(
    run: ModelFunction,
    names: Sequence[str],
    instances: Mapping[str, NDArray[np.generic]],
    own: NDArray[np.float64],
    background: Background,
    masks: NDArray[np.bool_],
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    stop: Stop | None = None,
) -> NDArray[np.float64]:
    """Member values ``v(S)`` [N, M, K, C] of every coalition in ``masks`` [M, F] per instance.

    ``own`` is the model's output on the instances [N, K, C]. The empty coalition is the
    background's mean output and the full one the instance's own output, so neither is expanded
    over the background rows.
    """
    rows = len(own)
    count, width = masks.shape
    sizes = masks.sum(axis=1)
    out = np.empty((rows, count, *own.shape[1:]))
    out[:, sizes == 0] = background.member_base_values
    out[:, sizes == width] = own[:, None]
    middle = np.flatnonzero((sizes > 0) & (sizes < width))
    b = background.rows
    # Work items are (instance, coalition) pairs; each expands to b model rows.
    pairs = rows * len(middle)
    per_call = max(1, chunk_rows // b)
    for start in range(0, pairs, per_call):
        _check(stop)
        item = np.arange(start, min(start + per_call, pairs))
        which, coalition = np.divmod(item, len(middle))
        chosen = masks[middle[coalition]]  # [m, F]
        columns = {}
        for f, name in enumerate(names):
            mine = instances[name][which]  # [m, 1]
            theirs = background.columns[name][:, 0][None, :]  # [1, b]
            columns[name] = np.where(chosen[:, f : f + 1], mine, theirs).reshape(-1, 1)
        member = run(columns)  # [m * b, K, C]
        shaped = member.reshape(len(item), b, -1)
        mean = np.add.reduce(shaped, axis=1, dtype=np.float64) / b
        out[which, middle[coalition]] = mean.reshape(len(item), *own.shape[1:])
    return out


def sampled_attributions(
    run: ModelFunction,
    names: Sequence[str],
    instances: Mapping[str, NDArray[np.generic]],
    own: NDArray[np.float64],
    background: Background,
    plan: PermutationPlan,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    stop: Stop | None = None,
) -> NDArray[np.float64]:
    """Member attributions [N, F, K, C]: marginal contributions averaged over the plan's orders.

    Along order p of background row b (a chain), step j holds the first j features of the
    order at the instance's values and the rest at row b's; feature ``orders[p, b, j]`` gains
    ``f(step j+1) - f(step j)``. Step 0 is f(b) and step F is f(x), both known already. Whole
    chains go into each model call, so a call's gains are summed and its rows dropped.
    """
    width = len(names)
    b = background.rows
    chains = plan.permutations * b
    inner = np.arange(1, width)  # the steps that need the model
    per_call = max(1, chunk_rows // max(width - 1, 1))
    flat = own.reshape(len(own), -1)  # [N, K*C]
    ends = background.member_probabilities.reshape(b, -1)
    out = np.zeros((len(own), width, flat.shape[1]))
    for n in range(len(own)):
        for start in range(0, chains, per_call):
            _check(stop)
            order, row = np.divmod(np.arange(start, min(start + per_call, chains)), b)
            rank = plan.rank[order, row]  # [c, F]
            steps = np.empty((len(row), width + 1, flat.shape[1]))
            steps[:, 0], steps[:, width] = ends[row], flat[n]
            if width > 1:
                chosen = rank[:, None, :] < inner[None, :, None]  # [c, F-1, F]
                columns = {}
                for f, name in enumerate(names):
                    mine = instances[name][n, 0]
                    theirs = background.columns[name][row]  # [c, 1]
                    columns[name] = np.where(chosen[:, :, f], mine, theirs).reshape(-1, 1)
                steps[:, 1:width] = run(columns).reshape(len(row), width - 1, -1)
            gains = np.diff(steps, axis=1)  # [c, F, K*C], by position in the order
            out[n] += np.take_along_axis(gains, rank[:, :, None], axis=1).sum(axis=0)
    out /= chains
    return out.reshape(len(own), width, *own.shape[1:])


def _check(stop: Stop | None) -> None:
    if stop is not None and stop.reached():
        raise Stopped
