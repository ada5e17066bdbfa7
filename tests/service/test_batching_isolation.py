"""A request onnxruntime cannot take fails alone, never the others of its dynamic batch.

The failures are real: a lone UTF-16 surrogate in a string tensor makes onnxruntime raise
UnicodeEncodeError while it encodes the input to UTF-8, both in a tiny graph
built here and in a test bundle's model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import numpy as np
import onnxruntime as ort
import pytest
from numpy.typing import NDArray
from onnx import TensorProto, helper

from service.batching import BatchingConfig, BatchOutput, BatchStats, DynamicBatcher
from service.runtime import LoadedModel, load_model
from service.serving import ConformalCalibration, derive_uncertainty
from service.types import FeatureBatch, Uncertainty
from tests.service.conftest import BundleFactory

POISON = "\ud800"  # a lone surrogate: valid in a Python str, not encodable as UTF-8


def echo_session() -> ort.InferenceSession:
    """A real session whose graph takes a string column ``s`` and echoes the float column ``x``."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "echo",
        [
            helper.make_tensor_value_info("s", TensorProto.STRING, ["N", 1]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


class Echo:
    """``run`` over the echo session: [rows, 1, 1] holding each row's ``x``; counts its calls."""

    def __init__(self) -> None:
        self.session = echo_session()
        self.calls: list[int] = []  # rows of every call

    def __call__(self, columns: Mapping[str, NDArray[np.generic]]) -> NDArray[np.float32]:
        self.calls.append(len(columns["x"]))
        out: NDArray[np.float32] = self.session.run(None, dict(columns))[0]
        return out.reshape(-1, 1, 1)


def echo_request(first: int, n: int, *, poisoned: bool = False) -> FeatureBatch:
    """``n`` rows with x = first, first+1, ...; with ``poisoned`` its last string is a surrogate."""
    s = np.array([[f"row{first + i}"] for i in range(n)], dtype=object)
    if poisoned:
        s[-1, 0] = POISON
    x = np.arange(first, first + n, dtype=np.float32).reshape(n, 1)
    return FeatureBatch({"s": s, "x": x}, n)


class Recorder:
    def __init__(self) -> None:
        self.stats: list[BatchStats] = []

    def __call__(self, stats: BatchStats) -> None:
        self.stats.append(stats)


def test_the_surrogate_really_makes_onnxruntime_fail() -> None:
    # The premise of the tests below: the failure comes from onnxruntime, not from us.
    echo = Echo()
    with pytest.raises(UnicodeEncodeError):
        echo(echo_request(0, 2, poisoned=True).columns)
    np.testing.assert_array_equal(echo(echo_request(0, 2).columns).ravel(), [0, 1])


@pytest.mark.parametrize("delay_us", [200_000, 0])
def test_poisoned_requests_fail_alone_and_their_batch_mates_get_their_own_rows(
    delay_us: int,
) -> None:
    echo = Echo()
    recorder = Recorder()
    # Two poisoned requests among five good ones, all in one batch when batching is on.
    requests = [
        echo_request(0, 2),
        echo_request(10, 3, poisoned=True),
        echo_request(20, 1),
        echo_request(30, 4),
        echo_request(40, 1, poisoned=True),
        echo_request(50, 2),
        echo_request(60, 1),
    ]
    bad = {1, 4}

    async def scenario() -> list[object]:
        batcher: DynamicBatcher[Uncertainty] = DynamicBatcher(
            echo,
            BatchingConfig(max_batch_size=64, max_queue_delay_us=delay_us),
            observers=[recorder],
        )
        out = await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
        after = await batcher.submit(echo_request(70, 2))  # the batcher keeps working
        await batcher.close()
        return [*out, after]

    outcomes = asyncio.run(scenario())
    for i, (request, outcome) in enumerate(zip(requests, outcomes, strict=False)):
        if i in bad:
            # The exception is onnxruntime's own, as raised: the HTTP layer answers it 500.
            assert isinstance(outcome, UnicodeEncodeError)
            continue
        assert isinstance(outcome, np.ndarray)
        np.testing.assert_array_equal(outcome.ravel(), request.columns["x"].ravel())
    np.testing.assert_array_equal(np.asarray(outcomes[-1]).ravel(), [70, 71])
    seen = [(s.rows, s.requests, s.failed, s.rerun) for s in recorder.stats]
    if delay_us:
        assert seen == [
            (14, 7, True, False),  # the batch of all seven fails...
            (2, 1, False, True),  # ...and each runs again alone, in queue order
            (3, 1, True, True),
            (1, 1, False, True),
            (4, 1, False, True),
            (1, 1, True, True),
            (2, 1, False, True),
            (1, 1, False, True),
            (2, 1, False, False),  # the request after
        ]
        assert echo.calls == [14, 2, 3, 1, 4, 1, 2, 1, 2]
    else:
        # Unbatched, every request is its own call: the poisoned ones fail alone, no reruns.
        assert sorted(seen) == sorted(
            [(r.rows, 1, i in bad, False) for i, r in enumerate(requests)] + [(2, 1, False, False)]
        )


def test_a_cancelled_caller_of_a_failed_batch_is_not_run_again() -> None:
    echo = Echo()

    async def scenario() -> tuple[object, object]:
        batcher: DynamicBatcher[Uncertainty] = DynamicBatcher(
            echo, BatchingConfig(max_batch_size=64, max_queue_delay_us=50_000)
        )
        good = asyncio.ensure_future(batcher.submit(echo_request(0, 2)))
        gone = asyncio.ensure_future(batcher.submit(echo_request(10, 5)))
        bad = asyncio.ensure_future(batcher.submit(echo_request(20, 1, poisoned=True)))
        await asyncio.sleep(0.005)  # all queued, none run yet
        gone.cancel()
        out = await asyncio.gather(good, bad, return_exceptions=True)
        await batcher.close()
        return out[0], out[1]

    good, bad = asyncio.run(scenario())
    assert isinstance(bad, UnicodeEncodeError)
    assert isinstance(good, np.ndarray)
    np.testing.assert_array_equal(good.ravel(), [0, 1])
    assert echo.calls == [3, 2, 1], "the batch without the cancelled rows, then each alone"


@pytest.fixture
def model(bundle_factory: BundleFactory) -> LoadedModel:
    return load_model(bundle_factory("toy"))


def bundle_rows(n: int, seed: int, *, poisoned: bool = False) -> FeatureBatch:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=(n, 1)).astype(np.float32)
    x2 = rng.normal(5, 2, size=(n, 1)).astype(np.float32)
    colour = rng.choice(["blue", "green", "red", "purple"], size=(n, 1)).astype(object)
    if poisoned:
        colour[0, 0] = POISON
    return FeatureBatch({"x1": x1, "x2": x2, "colour": colour}, n)


def test_a_mixed_batch_through_a_bundle_model_fails_only_the_poisoned_request(
    model: LoadedModel,
) -> None:
    scores = np.sort(np.random.default_rng(0).uniform(size=100))
    labels = np.array(["no", "yes", "maybe"], dtype=object)

    def derive(members: np.ndarray, level: float) -> Uncertainty:
        return derive_uncertainty(
            members, level, conformal=ConformalCalibration(scores), class_labels=labels
        )

    requests = [
        (bundle_rows(3, 0), 0.9),
        (bundle_rows(2, 1, poisoned=True), 0.9),
        (bundle_rows(1, 2), 0.5),
        (bundle_rows(4, 3), 0.9),
    ]

    async def scenario() -> list[object]:
        batcher = DynamicBatcher(
            model.run, BatchingConfig(max_batch_size=64, max_queue_delay_us=100_000), derive=derive
        )
        out: list[object] = await asyncio.gather(
            *(batcher.submit_timed(b, level) for b, level in requests), return_exceptions=True
        )
        await batcher.close()
        return out

    outcomes = asyncio.run(scenario())
    assert isinstance(outcomes[1], UnicodeEncodeError)
    for i in (0, 2, 3):
        batch, level = requests[i]
        got = outcomes[i]
        assert isinstance(got, BatchOutput) and got.derived is not None
        assert got.batch_rows == batch.rows, "answered by its rerun alone"
        alone = model.run(batch.columns)
        np.testing.assert_allclose(got.member_probabilities, alone, atol=1e-6)
        expected = derive(alone, level)
        np.testing.assert_allclose(got.derived.probabilities, expected.probabilities, atol=1e-6)
        np.testing.assert_array_equal(got.derived.prediction_sets, expected.prediction_sets)
