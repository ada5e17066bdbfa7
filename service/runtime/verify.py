"""Bundle verification: every check a bundle must pass before it may serve.

Each failure raises :class:`~service.errors.ModelLoadError` whose message names the bundle
directory and the check (``manifest``, ``sha256``, ``external-data``, ``onnx``, ``inputs``,
``output``, ``sample``), and whose details carry them as ``bundle`` and ``check`` for the
repository index.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.bundle import Manifest, ManifestError, NumericFeature, read_manifest
from service.errors import ModelLoadError
from service.runtime.external_data import MalformedModel, external_tensors

FLOAT_TENSOR = "tensor(float)"
STRING_TENSOR = "tensor(string)"


def load_error(bundle: Path, check: str, reason: str) -> ModelLoadError:
    """A ModelLoadError naming the bundle and the failed check."""
    return ModelLoadError(
        f"bundle {bundle} failed the {check} check: {reason}", bundle=str(bundle), check=check
    )


def verified_manifest(bundle: Path, expected_name: str | None = None) -> Manifest:
    """Read the manifest with the one schema; optionally check it names the model directory."""
    try:
        manifest = read_manifest(bundle)
    except ManifestError as exc:
        raise load_error(bundle, "manifest", str(exc)) from exc
    if expected_name is not None and manifest.name != expected_name:
        raise load_error(
            bundle,
            "manifest",
            f"manifest names the model {manifest.name!r} but it sits in the directory of "
            f"{expected_name!r}",
        )
    return manifest


def verified_model_bytes(bundle: Path, model_file: Path, manifest: Manifest) -> bytes:
    """Read model.onnx once and check its sha256; the session is built from these same bytes."""
    try:
        data = model_file.read_bytes()
    except OSError as exc:
        raise load_error(
            bundle, "sha256", f"cannot read {model_file.name}: {exc.strerror or exc}"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.model_sha256:
        raise load_error(
            bundle,
            "sha256",
            f"{model_file.name} has sha256 {digest} but the manifest says {manifest.model_sha256}",
        )
    return data


def check_self_contained(bundle: Path, model_file: Path, data: bytes) -> None:
    """Refuse a graph with any tensor whose data lives in an external file.

    ONNX Runtime would read that file from the server's working directory (the session is built
    from bytes), outside the bundle and the sha256; our bundles never use external data. The
    reason names the tensor, never the file it points at.
    """
    try:
        external = external_tensors(data)
    except MalformedModel as exc:
        raise load_error(
            bundle, "onnx", f"{model_file.name} is not a well-formed ONNX model: {exc}"
        ) from None
    if external:
        shown = ", ".join(repr(n) for n in external[:3]) + (" ..." if len(external) > 3 else "")
        raise load_error(
            bundle,
            "external-data",
            f"{model_file.name} keeps {len(external)} tensor(s) ({shown}) in external data "
            "files; a bundle must hold all its weights inside model.onnx",
        )


def _is_batch_dim(dim: Any) -> bool:
    # A dynamic batch axis shows up as a symbolic name (str) or None; a fixed int would make
    # batching impossible.
    return dim is None or isinstance(dim, str)


def check_signature(
    bundle: Path, manifest: Manifest, inputs: list[Any], outputs: list[Any]
) -> None:
    """Check the graph's inputs and output against the manifest (``NodeArg`` lists from ORT)."""
    expected = {f.name: f for f in manifest.features}
    actual = {i.name: i for i in inputs}
    missing = [n for n in expected if n not in actual]
    unexpected = [n for n in actual if n not in expected]
    if missing or unexpected:
        raise load_error(
            bundle,
            "inputs",
            f"graph inputs do not match the manifest features: missing {missing}, "
            f"not in the manifest {unexpected}",
        )
    for name, feature in expected.items():
        arg = actual[name]
        want = FLOAT_TENSOR if isinstance(feature, NumericFeature) else STRING_TENSOR
        if arg.type != want:
            raise load_error(
                bundle,
                "inputs",
                f"input {name!r} is {arg.type} but the manifest feature needs {want}",
            )
        shape = list(arg.shape)
        if len(shape) != 2 or not _is_batch_dim(shape[0]) or shape[1] != 1:
            raise load_error(
                bundle,
                "inputs",
                f"input {name!r} has shape {shape}, expected [N, 1] with dynamic N",
            )
    names = [o.name for o in outputs]
    if names != [manifest.output]:
        raise load_error(
            bundle, "output", f"graph outputs are {names}, expected exactly [{manifest.output!r}]"
        )
    out = outputs[0]
    if out.type != FLOAT_TENSOR:
        raise load_error(
            bundle, "output", f"output {out.name!r} is {out.type}, expected {FLOAT_TENSOR}"
        )
    shape = list(out.shape)
    want_shape = [manifest.members, len(manifest.classes)]
    if (
        len(shape) != 3
        or not _is_batch_dim(shape[0])
        # Symbolic K or C cannot be checked here; the sample run below checks the real shape.
        or any(isinstance(d, int) and d != w for d, w in zip(shape[1:], want_shape, strict=True))
    ):
        raise load_error(
            bundle,
            "output",
            f"output {out.name!r} has shape {shape}, expected [N, {manifest.members} members, "
            f"{len(manifest.classes)} classes]",
        )


def check_sample(bundle: Path, manifest: Manifest, produced: NDArray[np.float32]) -> None:
    """Check that running the stored sample rows reproduced the stored outputs."""
    expected = np.asarray(manifest.sample.outputs, dtype=np.float64)
    got = np.asarray(produced, dtype=np.float64)
    rows = expected.shape[0]
    want_shape = (rows, manifest.members, len(manifest.classes))
    if expected.shape != want_shape:
        raise load_error(
            bundle,
            "sample",
            f"sample.outputs has shape {list(expected.shape)}, expected {list(want_shape)}",
        )
    if got.shape != want_shape:
        raise load_error(
            bundle,
            "sample",
            f"the graph returned shape {list(got.shape)}, expected {list(want_shape)}",
        )
    diff = np.abs(got - expected)
    worst = float(np.nanmax(diff)) if diff.size else 0.0
    if np.isnan(diff).any() or worst > manifest.sample.tolerance:
        n, k, c = np.unravel_index(int(np.nanargmax(diff)), diff.shape) if diff.size else (0, 0, 0)
        raise load_error(
            bundle,
            "sample",
            f"running the stored sample rows differs from the stored outputs by {worst:.3g} "
            f"(tolerance {manifest.sample.tolerance:g}; worst at row {n}, member {k}, class "
            f"{manifest.classes[c]!r})",
        )
