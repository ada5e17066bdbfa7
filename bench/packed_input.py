"""Does a packed-input graph pay? One [N, F] float32 input and one [N, G] string input instead of
one [N, 1] input per feature, measured in-process (and optionally over HTTP) on a real bundle.

Run: ``.venv/bin/python bench/packed_input.py --model-repository models [--http]``.

The newest bundle's ``model.onnx`` is wrapped, not retrained: the wrapper's packed inputs are
split inside the graph (Split, Slice or Gather along axis 1) into the original per-feature
tensors, which feed the original nodes, inlined. Variant ``direct`` is what a re-exported graph
would be: where the original graph starts with a Concat of exactly the numeric inputs, that Concat
becomes an Identity of the packed input. Each variant must reproduce the original outputs on the
manifest's sample rows (and on a tiled batch with missing values) before anything is timed.

Timed per batch size, in alternating rounds (the order reverses every round), medians of the
per-call mean of each round: (a) the original graph fed the per-feature dict, (b) each packed
graph fed the two packed arrays, (c) stacking the per-feature columns into the packed arrays in
numpy (what a V2 codec that keeps one tensor per feature would pay), and three codecs from decoded
JSON rows: bare_app's (one numpy call per feature), one numpy call per feature kind handing out
[N, 1] views (what probserve's native codec does) and the same building the packed arrays.
The saving of a variant is a - b - c, also shown as a share of the service's p50 per request.

The first variant's packed graph is written to ``--output``. With ``--http``, wrk drives
bare_app (per-feature graph) and bench/apps/bare_packed_app.py on the per-feature graph and on
that packed graph, one connection, in alternating rounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import orjson
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from service.bench.contenders import free_port
from service.bench.runner import LOAD_CORE, SERVER_CORE, Server, pick_model
from service.bench.workload import native_body
from service.bench.wrk import run_wrk
from service.bundle import MODEL_FILE, NumericFeature, bundle_path, graph_columns, read_manifest
from service.bundle.manifest import Manifest
from service.runtime.providers import session_options

#: Names of the packed graph's inputs (made unique against the graph's own names if needed).
NUMERIC_INPUT = "packed_numeric"
CATEGORICAL_INPUT = "packed_categorical"
#: Model metadata keys: JSON lists of the feature names in packed column order (the packed app
#: reads them, so it needs no manifest).
NUMERIC_COLUMNS_KEY = "probserve.packed.numeric"
CATEGORICAL_COLUMNS_KEY = "probserve.packed.categorical"
VARIANTS = ("split", "slice", "gather", "direct")
APPS_DIR = Path(__file__).resolve().parent / "apps"

Feeds = dict[str, NDArray[Any]]


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 1
    while out in taken:
        out, i = f"{name}_{i}", i + 1
    taken.add(out)
    return out


def _int64(name: str, values: Sequence[int]) -> TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def _unpack_nodes(
    packed: str, columns: list[str], how: str, taken: set[str]
) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """Nodes that turn ``packed`` [N, len(columns)] into one [N, 1] tensor per column name."""
    if len(columns) == 1:
        return [helper.make_node("Identity", [packed], columns, name=_unique("unpack", taken))], []
    if how == "split":
        sizes = _int64(_unique(f"{packed}_sizes", taken), [1] * len(columns))
        node = helper.make_node(
            "Split", [packed, sizes.name], columns, axis=1, name=_unique("unpack", taken)
        )
        return [node], [sizes]
    nodes, inits = [], []
    axes = _int64(_unique(f"{packed}_axes", taken), [1])
    if how == "slice":
        inits.append(axes)
    for j, column in enumerate(columns):
        start = _int64(_unique(f"{packed}_{j}", taken), [j])
        inits.append(start)
        if how == "slice":
            end = _int64(_unique(f"{packed}_{j}_end", taken), [j + 1])
            inits.append(end)
            args = [packed, start.name, end.name, axes.name]
            nodes.append(helper.make_node("Slice", args, [column], name=_unique("unpack", taken)))
        else:  # gather with a 1-D index keeps the axis: [N, 1]
            nodes.append(
                helper.make_node(
                    "Gather", [packed, start.name], [column], axis=1, name=_unique("unpack", taken)
                )
            )
    return nodes, inits


def _direct_concat(graph: onnx.GraphProto, numeric: list[str]) -> onnx.NodeProto | None:
    """The Concat(axis=1) of exactly the numeric inputs in order, if nothing else reads them."""
    for node in graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), None)
        if node.op_type == "Concat" and list(node.input) == numeric and axis in (1, -1):
            readers = [n for n in graph.node if n is not node and set(n.input) & set(numeric)]
            outputs = {o.name for o in graph.output}
            return None if readers or set(numeric) & outputs else node
    return None


def packed_model(model: onnx.ModelProto, manifest: Manifest, how: str) -> onnx.ModelProto:
    """The original graph, inlined, behind one numeric [N, F] and one string [N, G] input."""
    graph = model.graph
    numeric = [f.name for f in manifest.features if isinstance(f, NumericFeature)]
    categorical = [f.name for f in manifest.features if not isinstance(f, NumericFeature)]
    initialisers = {t.name for t in graph.initializer}
    originals = {i.name: i for i in graph.input if i.name not in initialisers}
    if set(originals) != set(numeric + categorical):
        raise ValueError(f"graph inputs {sorted(originals)} are not the manifest's features")
    taken = initialisers | set(originals) | {o for n in graph.node for o in n.output}
    taken |= {n.name for n in graph.node}
    dim0 = originals[manifest.features[0].name].type.tensor_type.shape.dim[0]
    batch = dim0.dim_param or (dim0.dim_value if dim0.dim_value else None)

    nodes: list[onnx.NodeProto] = []
    inits: list[TensorProto] = []
    inputs: list[onnx.ValueInfoProto] = []
    body = list(graph.node)
    metadata = {NUMERIC_COLUMNS_KEY: numeric, CATEGORICAL_COLUMNS_KEY: categorical}
    for columns, base, elem in (
        (numeric, NUMERIC_INPUT, TensorProto.FLOAT),
        (categorical, CATEGORICAL_INPUT, TensorProto.STRING),
    ):
        if not columns:  # G = 0 (or F = 0): no empty input the client would have to send
            continue
        name = _unique(base, taken)
        inputs.append(helper.make_tensor_value_info(name, elem, [batch, len(columns)]))
        concat = _direct_concat(graph, numeric) if how == "direct" and columns is numeric else None
        if concat is not None:
            body = [n for n in body if n is not concat]
            identity = helper.make_node("Identity", [name], list(concat.output), name=concat.name)
            nodes.append(identity)
            continue
        more_nodes, more_inits = _unpack_nodes(
            name, columns, "split" if how == "direct" else how, taken
        )
        nodes += more_nodes
        inits += more_inits
    kept_inputs = {i for n in body for i in n.input}
    value_info = list(graph.value_info)
    value_info += [originals[c] for c in numeric + categorical if c in kept_inputs]
    new_graph = helper.make_graph(
        nodes + body,
        f"{graph.name}_packed_{how}",
        inputs,
        list(graph.output),
        initializer=list(graph.initializer) + inits,
        value_info=value_info,
    )
    packed = helper.make_model(
        new_graph, opset_imports=list(model.opset_import), producer_name="bench/packed_input.py"
    )
    packed.ir_version = model.ir_version
    packed.functions.extend(model.functions)  # local functions the original nodes may call
    helper.set_model_props(packed, {k: json.dumps(v) for k, v in metadata.items()})
    onnx.checker.check_model(packed, full_check=True)
    return packed


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    """A serving-like session: one intra-op thread, CPUExecutionProvider."""
    return ort.InferenceSession(
        model.SerializeToString(), session_options(), providers=["CPUExecutionProvider"]
    )


def pack(columns: Feeds, numeric: list[str], categorical: list[str], names: list[str]) -> Feeds:
    """Stack per-feature [N, 1] columns into the packed graph's inputs (``names``, in order)."""
    feeds: Feeds = {}
    for name, group in zip(names, [g for g in (numeric, categorical) if g], strict=True):
        feeds[name] = np.concatenate([columns[c] for c in group], axis=1)
    return feeds


def _load_app(name: str) -> ModuleType:
    """Import a standalone app from bench/apps (their codecs are what gets compared)."""
    if str(APPS_DIR) not in sys.path:  # bare_packed_app imports bare_app's HTTP side
        sys.path.insert(0, str(APPS_DIR))
    spec = importlib.util.spec_from_file_location(name, APPS_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiled(manifest: Manifest, rows: int) -> dict[str, list[Any]]:
    """The manifest's sample rows repeated to ``rows`` rows, column-wise."""
    sample = manifest.sample.inputs
    n = len(next(iter(sample.values())))
    return {k: [v[i % n] for i in range(rows)] for k, v in sample.items()}


def with_missing(manifest: Manifest, values: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """A copy with a diagonal of missing values and one unseen category, to check parity there."""
    out = {k: list(v) for k, v in values.items()}
    for j, f in enumerate(manifest.features):
        column = out[f.name]
        for i in range(j % 3, len(column), 5):
            column[i] = None if isinstance(f, NumericFeature) or i % 2 else "never-seen-category"
    return out


def check_parity(
    manifest: Manifest, original: ort.InferenceSession, packed: ort.InferenceSession, how: str
) -> None:
    """Raise unless the packed graph reproduces the original (and the stored) outputs."""
    numeric = [f.name for f in manifest.features if isinstance(f, NumericFeature)]
    categorical = [f.name for f in manifest.features if not isinstance(f, NumericFeature)]
    names = [i.name for i in packed.get_inputs()]
    output = [manifest.output]
    stored = np.array(manifest.sample.outputs, dtype=np.float64)
    for label, values in (
        ("sample rows", manifest.sample.inputs),
        ("tiled rows with missing values", with_missing(manifest, tiled(manifest, 64))),
    ):
        columns = graph_columns(manifest.features, values)
        want = original.run(output, columns)[0]
        got = packed.run(output, pack(columns, numeric, categorical, names))[0]
        if not np.allclose(got, want, rtol=1e-6, atol=1e-6, equal_nan=False):
            diff = float(np.max(np.abs(got - want)))
            raise AssertionError(f"{how}: packed outputs differ on {label} (max {diff:.3g})")
        if label == "sample rows" and not np.allclose(got, stored, atol=manifest.sample.tolerance):
            raise AssertionError(f"{how}: packed outputs differ from the manifest's stored ones")


def medians_us(
    cases: dict[str, Callable[[], object]], rounds: int, block_s: float
) -> dict[str, float]:
    """Median over ``rounds`` of each case's mean per-call time (us); order reverses each round."""
    iters: dict[str, int] = {}
    for name, fn in cases.items():  # warm up and size each block to about block_s
        for _ in range(20):
            fn()
        t0 = time.perf_counter()
        for _ in range(20):
            fn()
        per_call = (time.perf_counter() - t0) / 20
        iters[name] = max(20, int(block_s / max(per_call, 1e-7)))
    samples: dict[str, list[float]] = {k: [] for k in cases}
    order = list(cases)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            fn, n = cases[name], iters[name]
            t0 = time.perf_counter_ns()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter_ns() - t0) / n / 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


def in_process(
    manifest: Manifest,
    model: onnx.ModelProto,
    packed: dict[str, onnx.ModelProto],
    batches: list[int],
    rounds: int,
    block_s: float,
) -> dict[int, dict[str, float]]:
    """Per batch size: median us per call of every case (see the module docstring)."""
    numeric = [f.name for f in manifest.features if isinstance(f, NumericFeature)]
    categorical = [f.name for f in manifest.features if not isinstance(f, NumericFeature)]
    original = session(model)
    sessions = {how: session(m) for how, m in packed.items()}
    names = [i.name for i in next(iter(sessions.values())).get_inputs()]
    output = [manifest.output]
    bare, bare_packed = _load_app("bare_app"), _load_app("bare_packed_app")
    graph_inputs = [(f.name, isinstance(f, NumericFeature)) for f in manifest.features]
    results: dict[int, dict[str, float]] = {}
    for batch in batches:
        values = tiled(manifest, batch)
        columns = graph_columns(manifest.features, values)
        feeds = pack(columns, numeric, categorical, names)
        # Rows as the JSON decoder hands them to a codec.
        rows = orjson.loads(
            orjson.dumps([{k: v[i] for k, v in values.items()} for i in range(batch)])
        )
        # partial, not lambdas: each case binds this batch's arrays, not the loop's variables.
        cases: dict[str, Callable[[], object]] = {
            "a per-feature graph": partial(original.run, output, columns)
        }
        for how, packed_session in sessions.items():
            cases[f"b packed graph ({how})"] = partial(packed_session.run, output, feeds)
        cases["c stack columns"] = partial(pack, columns, numeric, categorical, names)
        cases["codec: per-feature arrays"] = partial(bare._columns, graph_inputs, rows)
        cases["codec: one array, views"] = partial(
            bare_packed.column_views, numeric, categorical, rows
        )
        cases["codec: one array, packed"] = partial(
            bare_packed.packed_feeds, names, numeric, categorical, rows
        )
        results[batch] = medians_us(cases, rounds, block_s)
    return results


def over_http(
    manifest: Manifest,
    onnx_files: dict[str, Path],
    batches: list[int],
    rounds: int,
    seconds: float,
    work: Path,
) -> dict[tuple[str, int], list[float]]:
    """wrk -t1 -c1 p50 latency (us) per (server, batch), ``rounds`` alternating runs each.

    Three servers: bare_app on the bundle's graph (30 numpy calls per request at F = 30), and
    bare_packed_app (one numpy call per feature kind) on the bundle's graph and on the packed one,
    so the last two differ only in the graph's inputs.
    """
    apps = {
        "bare_app, per-feature graph": ("bare_app:create_app", onnx_files["original"]),
        "bare_packed_app, per-feature graph": (
            "bare_packed_app:create_app",
            onnx_files["original"],
        ),
        "bare_packed_app, packed graph": ("bare_packed_app:create_app", onnx_files["packed"]),
    }
    results: dict[tuple[str, int], list[float]] = {}
    servers: dict[str, tuple[Server, str]] = {}
    try:
        for i, (app, (factory, onnx_file)) in enumerate(apps.items()):
            port = free_port()
            cmd = [
                sys.executable, "-m", "uvicorn", "--factory", factory, "--app-dir", str(APPS_DIR),
                "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
                "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
            ]  # fmt: skip
            env = {**os.environ, "PROBSERVE_BENCH_ONNX": str(onnx_file)}
            url = f"http://127.0.0.1:{port}/predict"
            servers[app] = (Server(cmd, env, work / f"server{i}.log"), url)
        for server, url in servers.values():
            server.wait_ready(url, native_body(manifest, 1))
            for batch in batches:  # warm-up
                run_wrk(url, native_body(manifest, batch), connections=1, seconds=1, core=LOAD_CORE)
        order = list(servers)
        for r in range(rounds):
            for app in order if r % 2 == 0 else order[::-1]:
                _, url = servers[app]
                for batch in batches:
                    body = native_body(manifest, batch)
                    res = run_wrk(url, body, connections=1, seconds=seconds, core=LOAD_CORE)
                    if res.errors:
                        raise RuntimeError(f"{app}: {res.errors} failed requests at batch {batch}")
                    results.setdefault((app, batch), []).append(res.p50_ms * 1e3)
    finally:
        for server, _ in servers.values():
            server.stop()
    return results


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: Sequence[str] | None = None) -> None:
    """Build the packed graphs, check parity, time them and print Markdown tables."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--model-repository", type=Path, default=Path("models"))
    p.add_argument("--model", help="model name (default: the first in the repository)")
    p.add_argument("--variants", default="split,direct", help=f"of {','.join(VARIANTS)}")
    p.add_argument("--batches", type=_ints, default=[1, 8, 64, 256])
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--block-ms", type=float, default=8.0, help="time per case per round")
    p.add_argument("--service-p50-us", type=float, default=900.0, help="probserve, 1 connection")
    p.add_argument("--floor-p50-us", type=float, default=430.0, help="bare ASGI app, 1 connection")
    p.add_argument("--output", type=Path, help="where to write the first variant's packed graph")
    p.add_argument("--http", action="store_true", help="also wrk the bare and bare_packed apps")
    p.add_argument("--http-batches", type=_ints, default=[1, 64])
    p.add_argument("--http-rounds", type=int, default=3)
    p.add_argument("--http-seconds", type=float, default=3.0)
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if not variants or set(variants) - set(VARIANTS):
        p.error(f"--variants takes a comma-separated subset of {','.join(VARIANTS)}")

    name, version = pick_model(args.model_repository, args.model)
    bundle = bundle_path(args.model_repository, name, version)
    manifest = read_manifest(bundle)
    model = onnx.load(str(bundle / MODEL_FILE))
    numeric = [f.name for f in manifest.features if isinstance(f, NumericFeature)]
    if "direct" in variants and _direct_concat(model.graph, numeric) is None:
        print("variant direct left out: the graph has no Concat of exactly the numeric inputs")
        variants.remove("direct")
        if not variants:
            p.error("no variant left to measure")
    packed = {how: packed_model(model, manifest, how) for how in variants}
    original = session(model)
    for how, m in packed.items():
        check_parity(manifest, original, session(m), how)
    n_num = len(numeric)
    n_cat = len(manifest.features) - n_num
    print(f"# Packed inputs: {name} v{version}, F={n_num} numeric, G={n_cat} categorical")
    print(f"parity: {', '.join(variants)} reproduce the original outputs (sample + missing values)")
    print(f"onnxruntime {ort.__version__}, 1 intra-op thread, CPUExecutionProvider")
    print(f"loadavg before: {Path('/proc/loadavg').read_text().strip()}\n")

    results = in_process(manifest, model, packed, args.batches, args.rounds, args.block_ms / 1e3)
    cases = list(next(iter(results.values())))
    print("## In-process, median us per call\n")
    print("| batch | " + " | ".join(cases) + " |")
    print("|---:|" + "---:|" * len(cases))
    for batch, r in results.items():
        print(f"| {batch} | " + " | ".join(f"{r[c]:.1f}" for c in cases) + " |")
    print("\n## Saving per request: a - b - c, us (share of the service p50)\n")
    print("| batch | " + " | ".join(variants) + " |")
    print("|---:|" + "---:|" * len(variants))
    for batch, r in results.items():
        savings = [
            r["a per-feature graph"] - r[f"b packed graph ({v})"] - r["c stack columns"]
            for v in variants
        ]
        shares = [f"{x:.1f} ({100 * x / args.service_p50_us:.1f}%)" for x in savings]
        print(f"| {batch} | " + " | ".join(shares) + " |")
    print(f"\nloadavg after: {Path('/proc/loadavg').read_text().strip()}")
    print(
        f"share: of the {args.service_p50_us:.0f} us "
        f"probserve p50 at batch 1, 1 connection (bare ASGI floor {args.floor_p50_us:.0f} us); "
        "a batch-64 request takes longer than that, so its share is an upper bound."
    )

    with tempfile.TemporaryDirectory(prefix="packed-input-") as tmp:
        work = Path(tmp)
        out = args.output or work / "model.packed.onnx"
        out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(packed[variants[0]], str(out))
        print(f"\npacked graph ({variants[0]}) written to {out}")
        if args.http:
            files = {"original": bundle / MODEL_FILE, "packed": out}
            http = over_http(
                manifest, files, args.http_batches, args.http_rounds, args.http_seconds, work
            )
            print(
                f"\n## HTTP, wrk -t1 -c1 -d{args.http_seconds:g}s, server on core {SERVER_CORE}, "
                f"wrk on core {LOAD_CORE}: p50 us per round, median\n"
            )
            print("| server | batch | rounds (p50 us) | median |")
            print("|---|---:|---|---:|")
            for (app, batch), p50s in sorted(http.items(), key=lambda kv: kv[0][1]):
                rounds = ", ".join(f"{x:.0f}" for x in p50s)
                print(f"| {app} | {batch} | {rounds} | {statistics.median(p50s):.0f} |")
            print(f"\nloadavg after HTTP: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
