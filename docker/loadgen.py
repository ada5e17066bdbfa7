"""Demo traffic for the compose stack: steady predictions, one feature shift, feedback labels.

Sends the model's own example request (``GET /v1/models/{name}`` -> ``example``) with a little
noise on every numeric feature, at a steady rate. After ``--shift-after-s`` seconds one numeric
feature moves by ``--shift-std`` standard deviations, so the drift monitor has something to find.
Labels arrive later, as in real life: ``--feedback-delay-s`` after a prediction, a share of its
instances is labelled through ``POST /v1/models/{name}/feedback``. A label is drawn from the
served probabilities (so realized accuracy tracks the estimate) and, after the shift, replaced by
another class with probability ``--flip-after-shift`` (the shift hurts the model, and the
dashboards show realized accuracy falling).

The standard deviation of a feature comes from the bundle manifest when ``--model-repository``
is given (the compose stack mounts the model volume read-only); without it, the magnitude of the
example's value stands in for it. Standard library only (plus the installed probserve package for
the manifest), so it runs in the service image: ``python /opt/probserve/loadgen.py --help``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Seconds between progress lines.
REPORT_EVERY_S = 30.0


@dataclass(frozen=True)
class ModelView:
    """What the load generator needs to know about one served model."""

    name: str
    version: int
    example: dict[str, Any]  # one instance: feature -> raw value
    numeric: list[str]  # numeric features, in the model's order
    classes: list[str]


@dataclass
class Stats:
    """Counts of one run (printed as it goes, returned at the end)."""

    requests: int = 0
    errors: int = 0
    shifted_requests: int = 0
    labels_posted: int = 0
    labels_accepted: int = 0
    labels_unknown: int = 0
    labels_invalid: int = 0
    pending: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


class Client:
    """JSON over HTTP with urllib: the service image has no HTTP client library to spare."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def get(self, path: str) -> Any:
        """GET ``path`` and decode the JSON answer."""
        with urllib.request.urlopen(self.base_url + path, timeout=self.timeout_s) as answer:
            return json.load(answer)

    def post(self, path: str, body: Any) -> Any:
        """POST ``body`` as JSON to ``path`` and decode the JSON answer."""
        request = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
            return json.load(answer)


def read_model(client: Client, name: str) -> ModelView:
    """The served model's metadata and its example instance."""
    info = client.get(f"/v1/models/{name}")
    numeric = [f["name"] for f in info["features"] if f["kind"] == "numeric"]
    return ModelView(
        name=info["name"],
        version=int(info["version"]),
        example=dict(info["example"]["instances"][0]),
        numeric=numeric,
        classes=[str(c) for c in info["classes"]],
    )


def feature_scales(model: ModelView, repository: Path | None) -> dict[str, float]:
    """One standard deviation per numeric feature: the manifest's, else the value's magnitude."""
    if repository is not None:
        # Imported only here: the manifest is parsed by the project's one bundle contract.
        from service.bundle import NumericFeature, bundle_path, read_manifest

        manifest = read_manifest(bundle_path(repository, model.name, model.version))
        stds = {f.name: f.std for f in manifest.features if isinstance(f, NumericFeature)}
        return {name: stds[name] if stds[name] > 0 else 1.0 for name in model.numeric}
    scales = {}
    for name in model.numeric:
        value = model.example.get(name)
        scales[name] = abs(float(value)) if isinstance(value, int | float) and value else 1.0
    return scales


def make_instance(
    example: dict[str, Any],
    scales: dict[str, float],
    rng: random.Random,
    *,
    noise: float,
    shift: dict[str, float],
) -> dict[str, Any]:
    """The example with N(0, noise * scale) added to each numeric value, plus ``shift``.

    A missing value (None) stays missing: the model imputes it, and so would real traffic.
    """
    instance = dict(example)
    for name, scale in scales.items():
        value = instance.get(name)
        if value is None:
            continue
        moved = float(value) + rng.gauss(0.0, noise * scale) + shift.get(name, 0.0)
        instance[name] = moved
    return instance


def draw_label(
    probabilities: dict[str, float], classes: Sequence[str], rng: random.Random, flip: float
) -> str:
    """A label drawn from ``probabilities``; with probability ``flip``, another class instead."""
    names = list(probabilities)
    label = rng.choices(names, weights=[probabilities[n] for n in names])[0]
    others = [c for c in classes if c != label]
    if others and rng.random() < flip:
        return rng.choice(others)
    return label


def post_due_feedback(client: Client, model: str, stats: Stats, now: float, delay_s: float) -> None:
    """Post every pending label older than ``delay_s`` in one feedback call."""
    due = [label for at, label in stats.pending if now - at >= delay_s]
    if not due:
        return
    stats.pending = [(at, label) for at, label in stats.pending if now - at < delay_s]
    try:
        counts = client.post(f"/v1/models/{model}/feedback", {"labels": due})
    except (urllib.error.URLError, OSError, ValueError) as exc:
        stats.errors += 1
        print(f"loadgen: feedback failed: {exc}", file=sys.stderr)
        return
    stats.labels_posted += len(due)
    stats.labels_accepted += int(counts.get("accepted", 0))
    stats.labels_unknown += int(counts.get("unknown", 0))
    stats.labels_invalid += int(counts.get("invalid", 0))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (every option has a default that suits the compose stack)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the service's base URL")
    p.add_argument("--model", default="breast_cancer", help="model name")
    p.add_argument("--model-repository", type=Path, default=None, help="for feature stds")
    p.add_argument("--rate", type=float, default=20.0, help="requests per second (0: no pause)")
    p.add_argument("--batch", type=int, default=1, help="instances per request")
    p.add_argument("--noise", type=float, default=0.1, help="noise sd, in feature stds")
    p.add_argument("--shift-after-s", type=float, default=300.0, help="seconds before the shift")
    p.add_argument("--shift-feature", default=None, help="numeric feature to shift [first]")
    p.add_argument("--shift-std", type=float, default=1.0, help="shift size, in feature stds")
    p.add_argument("--feedback-share", type=float, default=0.5, help="share of rows labelled")
    p.add_argument("--feedback-delay-s", type=float, default=10.0, help="label arrival delay")
    p.add_argument("--flip-after-shift", type=float, default=0.3, help="wrong-label rate")
    p.add_argument("--requests", type=int, default=0, help="stop after N requests (0: never)")
    p.add_argument("--wait-s", type=float, default=120.0, help="how long to wait for the model")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def wait_for_model(client: Client, name: str, wait_s: float) -> ModelView:
    """The model's view, retrying while the service starts (the compose stack starts together)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return read_model(client, name)
        except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
            if time.monotonic() >= deadline:
                where = client.base_url
                raise SystemExit(f"loadgen: model {name!r} not at {where}: {exc}") from None
            time.sleep(2.0)


def run(args: argparse.Namespace) -> Stats:
    """Send traffic until ``--requests`` is reached (or forever); returns the counts."""
    client = Client(args.url)
    rng = random.Random(args.seed)
    model = wait_for_model(client, args.model, args.wait_s)
    if not model.numeric:
        raise SystemExit(f"loadgen: model {model.name!r} has no numeric feature to shift")
    feature = args.shift_feature or model.numeric[0]
    if feature not in model.numeric:
        raise SystemExit(f"loadgen: {feature!r} is not a numeric feature of {model.name!r}")
    scales = feature_scales(model, args.model_repository)
    shift = {feature: args.shift_std * scales[feature]}
    print(
        f"loadgen: {model.name} v{model.version}, {args.rate:g} req/s; after "
        f"{args.shift_after_s:g} s {feature!r} moves by {shift[feature]:.4g} "
        f"({args.shift_std:g} std)",
        flush=True,
    )
    stats = Stats()
    start = last_report = time.monotonic()
    while args.requests == 0 or stats.requests < args.requests:
        now = time.monotonic()
        shifted = now - start >= args.shift_after_s
        instances = [
            make_instance(
                model.example, scales, rng, noise=args.noise, shift=shift if shifted else {}
            )
            for _ in range(args.batch)
        ]
        try:
            answer = client.post(f"/v1/models/{model.name}/predict", {"instances": instances})
        except (urllib.error.URLError, OSError, ValueError) as exc:
            stats.errors += 1
            print(f"loadgen: predict failed: {exc}", file=sys.stderr)
            time.sleep(1.0)
        else:
            stats.requests += 1
            stats.shifted_requests += int(shifted)
            flip = args.flip_after_shift if shifted else 0.0
            for i, prediction in enumerate(answer["predictions"]):
                if rng.random() < args.feedback_share:
                    label = draw_label(prediction["probabilities"], model.classes, rng, flip)
                    item = {"request_id": answer["request_id"], "instance": i, "label": label}
                    stats.pending.append((now, item))
        post_due_feedback(client, model.name, stats, time.monotonic(), args.feedback_delay_s)
        if time.monotonic() - last_report >= REPORT_EVERY_S:
            last_report = time.monotonic()
            print(
                f"loadgen: {stats.requests} requests, {stats.errors} errors, "
                f"{stats.labels_accepted} labels accepted, shifted={shifted}",
                flush=True,
            )
        if args.rate > 0:
            time.sleep(max(0.0, 1.0 / args.rate - (time.monotonic() - now)))
    # Labels still pending: let them age, then post them, so a bounded run sends every label.
    if stats.pending:
        time.sleep(max(0.0, args.feedback_delay_s - (time.monotonic() - stats.pending[-1][0])))
        post_due_feedback(client, model.name, stats, time.monotonic(), args.feedback_delay_s)
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run, print the counts as one JSON line, exit 0."""
    stats = run(parse_args(argv))
    counts = {k: v for k, v in vars(stats).items() if k != "pending"}
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
