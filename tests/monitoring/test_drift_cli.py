"""``probserve drift run`` end to end: a log written by service.predlog's own writer, in the
Parquet dataset and (for the full run) in a real PostgreSQL whose database has no locale
(SQL_ASCII)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest

from monitoring.drift.monitor import Monitor
from monitoring.drift.reading import read_baseline
from monitoring.drift.settings import DriftSettings
from service import predlog
from service.bundle import write_manifest
from service.bundle.manifest import SensitiveColumn
from service.cli import main
from service.predlog.layout import CONTEXT_PREFIX, context_column
from tests.monitoring.conftest import CLASSES_PREFIX, DriftBundle
from tests.pg_support import PostgresServer, running_postgres
from tests.support import free_port


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the module; each test that uses it makes its own database."""
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["parquet", "postgresql-sql-ascii"])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty prediction log in each store the drift job reads."""
    if request.param == "parquet":
        return str(tmp_path / "predictions")
    pg: PostgresServer = request.getfixturevalue("pg")
    return pg.create_database(request.node.name.lower(), "SQL_ASCII")


def write_log(bundle: DriftBundle, url: str, window: pd.DataFrame, spool: Path) -> None:
    """Log ``window``'s rows through the real writer, then its ground truth as feedback."""
    log = predlog.PredictionLog(url, spool_dir=spool)
    log.start()
    try:
        classes = bundle.manifest.classes
        probs = window[[f"{CLASSES_PREFIX}{c}" for c in classes]].to_numpy()
        # The window's context.<name> columns are the requests' context attributes.
        context_names = [
            c.removeprefix(CONTEXT_PREFIX) for c in window.columns if c.startswith(CONTEXT_PREFIX)
        ]
        for i, row in window.iterrows():
            context = {
                name: np.asarray(
                    ["" if pd.isna(row[context_column(name)]) else str(row[context_column(name)])],
                    dtype=object,
                )
                for name in context_names
            }
            # The arrays the codec hands the log: float32 with NaN, object strings with "".
            features: dict[str, Any] = {
                name: np.asarray([[row[name]]], dtype=np.float32)
                for name in bundle.manifest.numeric_feature_names
            }
            features.update(
                {
                    name: np.asarray([["" if pd.isna(row[name]) else str(row[name])]], dtype=object)
                    for name in bundle.manifest.categorical_feature_names
                }
            )
            features = {name: features[name] for name in bundle.manifest.feature_names}
            width = float(row["interval_width"])
            p = probs[int(i)]
            top = int(p.argmax())
            lower, upper = p.copy(), p.copy()
            lower[top], upper[top] = max(p[top] - width / 2, 0.0), p[top] + width / 2
            members = np.zeros((1, len(classes)), dtype=bool)
            order = np.argsort(-p)[: int(row["set_size"])]
            members[0, order] = True
            log.enqueue(
                predlog.PredictionRecord(
                    logged_at=float(row["logged_at"]),
                    request_id=str(row["request_id"]),
                    model=bundle.manifest.name,
                    version=1,
                    protocol="v1",
                    classes=classes,
                    features=features,
                    probabilities=p[None, :],
                    lower=lower[None, :],
                    upper=upper[None, :],
                    prediction_sets=members,
                    labels=[str(row["label"])],
                    confidence_level=0.95,
                    latency_s=0.001,
                    context=context or None,
                )
            )
    finally:
        log.stop()
    labelled = window[window["true_label"].notna()]
    if len(labelled):
        log = predlog.PredictionLog(url, spool_dir=spool)
        log.start()
        try:
            counts = log.record_feedback(
                bundle.manifest.name,
                [
                    predlog.FeedbackLabel(str(r.request_id), 0, str(r.true_label))
                    for r in labelled.itertuples()
                ],
                classes,
            )
            assert counts.accepted == len(labelled)
        finally:
            log.stop()


@dataclass(frozen=True)
class Done:
    """Exit status and output of one command."""

    returncode: int
    stdout: str
    stderr: str


def drift(capfd: pytest.CaptureFixture[str], *args: str) -> Done:
    """Run ``probserve drift ...`` through the root CLI, in process (Evidently imports once)."""
    capfd.readouterr()
    try:
        code = main(["drift", *args])
    except SystemExit as exc:  # the drift commands exit with their own status
        code = int(exc.code or 0)
    out, err = capfd.readouterr()
    return Done(code, out, err)


def _args(bundle: DriftBundle, url: str, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "run", "--model", "toy", "--model-repository", str(bundle.repository),
        "--prediction-log-url", url, "--output", str(tmp_path / "out"),
        "--workspace", str(tmp_path / "ws"), *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_run_writes_report_summary_and_workspace(
    drift_bundle: DriftBundle, tmp_path: Path, capfd: pytest.CaptureFixture[str], log_url: str
) -> None:
    url = log_url
    window = drift_bundle.log_window(np.random.default_rng(3), 300, x1_shift=1.0, labelled=80)
    write_log(drift_bundle, url, window, tmp_path / "spool")
    # Two labels whose predictions were never logged: well formed, so stored, but unmatched.
    log = predlog.PredictionLog(url, spool_dir=tmp_path / "spool")
    log.start()
    try:
        ghosts = [
            predlog.FeedbackLabel("ghost", i, drift_bundle.manifest.classes[0]) for i in (0, 1)
        ]
        log.record_feedback("toy", ghosts, drift_bundle.manifest.classes)
    finally:
        log.stop()
    done = drift(capfd, *_args(drift_bundle, url, tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("toy: dataset_drift=")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows_current"] == 300
    assert summary["columns"]["x1"]["drift_detected"] is True
    assert summary["labelled_rows"] == 80
    assert summary["feedback_unmatched"] == 2
    labelled = window[window["true_label"].notna()]
    assert summary["realized_accuracy"] == pytest.approx(
        float((labelled["label"] == labelled["true_label"]).mean())
    )
    assert summary["versions"] == ["1"]
    assert (tmp_path / "out" / "report.html").stat().st_size > 100_000
    assert (tmp_path / "ws").is_dir()


def _sliced_run(
    bundle: DriftBundle,
    sensitive: SensitiveColumn,
    window: pd.DataFrame,
    url: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> tuple[Done, dict[str, Any]]:
    """Declare ``sensitive`` in the bundle, log ``window``, run the job: its output and
    summary.json."""
    write_manifest(bundle.path, bundle.manifest.model_copy(update={"sensitive": [sensitive]}))
    write_log(bundle, url, window, tmp_path / "spool")
    done = drift(capfd, *_args(bundle, url, tmp_path))
    assert done.returncode == 0, done.stderr
    return done, json.loads((tmp_path / "out" / "summary.json").read_text())


def _accuracy(rows: pd.DataFrame) -> float:
    """Realized accuracy of the labelled ones of ``rows``, counted directly."""
    labelled = rows[rows["true_label"].notna()]
    return float((labelled["label"] == labelled["true_label"]).mean())


@pytest.mark.slow
def test_run_slices_a_real_log_by_a_sensitive_feature(
    drift_bundle: DriftBundle, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    colour = SensitiveColumn(name="colour", source="feature", groups=["blue", "green", "red"])
    window = drift_bundle.log_window(np.random.default_rng(31), 300, labelled=200)
    window.loc[0:9, "colour"] = "purple"  # not a training group: "other", too small
    window.loc[10:14, "colour"] = None  # logged as "": "missing", too small
    url = str(tmp_path / "predictions")
    done, summary = _sliced_run(drift_bundle, colour, window, url, tmp_path, capfd)
    column = summary["fairness"]["columns"]["colour"]
    assert column["source"] == "feature"
    groups = column["groups"]
    assert list(groups) == ["blue", "green", "red", "other", "missing"]
    assert groups["other"] == {"rows": 10, "labelled_rows": 10, "too_small": True, "figures": {}}
    assert groups["missing"] == {"rows": 5, "labelled_rows": 5, "too_small": True, "figures": {}}
    for name in ("blue", "green", "red"):
        rows = window[window["colour"] == name]
        labelled = int(rows["true_label"].notna().sum())
        assert (groups[name]["rows"], groups[name]["labelled_rows"]) == (len(rows), labelled)
        realized = groups[name]["figures"]["realized_accuracy"]
        assert realized["value"] == pytest.approx(_accuracy(rows))
        assert realized["low"] <= realized["value"] <= realized["high"]
    gap = column["disparity"]["realized_accuracy"]
    values = {
        g: groups[g]["figures"]["realized_accuracy"]["value"] for g in ("blue", "green", "red")
    }
    assert gap["lowest"] == min(values, key=values.__getitem__)
    assert gap["difference"] == pytest.approx(max(values.values()) - min(values.values()))
    assert "toy: fairness by colour: estimated_accuracy gap" in done.stdout
    assert "too small: other, missing" in done.stdout


@pytest.mark.slow
def test_run_slices_a_real_log_by_a_request_context_attribute(
    drift_bundle: DriftBundle, tmp_path: Path, capfd: pytest.CaptureFixture[str], log_url: str
) -> None:
    # "region" is kept out of the model: each request carries it as a context attribute, the
    # log's writer stores it as context.region, and the drift job slices by it.
    region = SensitiveColumn(name="region", source="context", groups=["north", "south"])
    window = drift_bundle.log_window(np.random.default_rng(32), 240, labelled=240)
    window[context_column("region")] = np.where(np.arange(240) % 2 == 0, "north", "south")
    # South's labels are wrong on every other row: its realized accuracy is the lower one.
    south = np.arange(240) % 4 == 1
    classes = drift_bundle.manifest.classes
    window.loc[south, "true_label"] = [
        classes[(classes.index(p) + 1) % 3] for p in window.loc[south, "label"]
    ]
    window.loc[0:3, context_column("region")] = "west"  # not a training group: "other"
    window.loc[4:5, context_column("region")] = None  # not given: "missing"
    _, summary = _sliced_run(drift_bundle, region, window, log_url, tmp_path, capfd)
    column = summary["fairness"]["columns"]["region"]
    assert column["source"] == "context"
    rows = {g: v["rows"] for g, v in column["groups"].items()}
    # north: the 120 even rows but 0, 2 (west) and 4 (not given); south: the odd rows but 1, 3, 5.
    assert rows == {"north": 117, "south": 117, "other": 4, "missing": 2}
    for name in ("north", "south"):
        realized = column["groups"][name]["figures"]["realized_accuracy"]
        assert realized["value"] == pytest.approx(
            _accuracy(window[window[context_column("region")] == name])
        )
    gap = column["disparity"]["realized_accuracy"]
    assert (gap["lowest"], gap["highest"]) == ("south", "north")
    assert not any("context.region" in w for w in summary["warnings"])


@pytest.mark.slow
def test_empty_log_and_too_few_rows_exit_3(
    drift_bundle: DriftBundle, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "predictions")
    write_log(
        drift_bundle, url, drift_bundle.log_window(np.random.default_rng(4), 0), tmp_path / "spool"
    )
    done = drift(capfd, *_args(drift_bundle, url, tmp_path))
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "not enough" in done.stderr
    write_log(
        drift_bundle, url, drift_bundle.log_window(np.random.default_rng(5), 10), tmp_path / "spool"
    )
    done = drift(capfd, *_args(drift_bundle, url, tmp_path))
    assert done.returncode == 3
    assert "10 logged row(s)" in done.stderr
    done = drift(capfd, *_args(drift_bundle, url, tmp_path, "--min-rows", "5"))
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_bad_usage_is_one_line_exit_2(
    drift_bundle: DriftBundle, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "predictions")
    cases = [
        ("--model", "ghost"),  # overrides --model toy: unknown model
        ("--since", "yesterday"),
        ("--since", "1h", "--last", "5"),
        ("--column-method", "x1"),
        ("--column-threshold", "x1=abc"),
    ]
    for extra in cases:
        done = drift(capfd, *_args(drift_bundle, url, tmp_path, *extra))
        assert done.returncode == 2, (extra, done.stderr)
        assert done.stderr.count("\n") == 1, (extra, done.stderr)
        assert "Traceback" not in done.stderr
        assert str(tmp_path) not in done.stderr


@pytest.mark.slow
def test_unwritten_postgres_log_is_one_line_exit_2(
    drift_bundle: DriftBundle,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    pg: PostgresServer,
    request: pytest.FixtureRequest,
) -> None:
    """A database the server has not logged to yet (no tables), and one that does not exist."""
    empty = pg.create_database(request.node.name.lower())
    absent = f"postgresql://postgres:secret@127.0.0.1:{pg.port}/absent"
    for url, message in ((empty, "cannot be read"), (absent, "cannot connect to PostgreSQL")):
        done = drift(capfd, *_args(drift_bundle, url, tmp_path))
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert message in done.stderr and "secret" not in done.stderr
        assert not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.slow
def test_log_of_another_bundle_is_one_line_exit_2(
    drift_bundle: DriftBundle, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "predictions")
    window = drift_bundle.log_window(np.random.default_rng(6), 50)
    renamed = ["age", "height", "city"]
    window = window.rename(columns=dict(zip(["x1", "x2", "colour"], renamed, strict=True)))
    other = DriftBundle(
        drift_bundle.repository,
        drift_bundle.path,
        drift_bundle.manifest.model_copy(
            update={
                "features": [
                    f.model_copy(update={"name": n})
                    for f, n in zip(
                        drift_bundle.manifest.features, ["age", "height", "city"], strict=True
                    )
                ]
            }
        ),
    )
    write_log(other, url, window, tmp_path / "spool")
    done = drift(capfd, *_args(drift_bundle, url, tmp_path))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1
    assert "another bundle" in done.stderr


@pytest.mark.slow
def test_unreachable_pushgateway_exits_1_after_writing(
    drift_bundle: DriftBundle, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "predictions")
    write_log(
        drift_bundle, url, drift_bundle.log_window(np.random.default_rng(7), 40), tmp_path / "spool"
    )
    closed = f"127.0.0.1:{free_port()}"
    done = drift(capfd, *_args(drift_bundle, url, tmp_path, "--pushgateway", closed))
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1
    assert "Pushgateway" in done.stderr
    assert (tmp_path / "out" / "summary.json").exists()


@pytest.mark.slow
def test_monitor_runs_the_real_job_for_every_model(
    drift_bundle: DriftBundle, tmp_path: Path
) -> None:
    url = str(tmp_path / "predictions")
    window = drift_bundle.log_window(np.random.default_rng(8), 120, x1_shift=1.0, labelled=60)
    write_log(drift_bundle, url, window, tmp_path / "spool")
    settings = DriftSettings(
        model_repository=drift_bundle.repository,
        prediction_log_url=url,
        output=tmp_path / "out",
        workspace=tmp_path / "ws",
    )
    monitor = Monitor(settings, [], every=900)
    monitor.run_all()
    text = generate_latest(monitor.metrics.registry).decode()
    assert 'probserve_drift_rows{model="toy"} 120.0' in text
    assert 'probserve_drift_detected{column="x1",model="toy"} 1.0' in text
    assert 'probserve_reference_accuracy{model="toy"} 0.5' in text
    assert 'probserve_realized_accuracy{model="toy"}' in text
    runs = list((tmp_path / "out" / "toy").iterdir())
    assert len(runs) == 1
    assert (runs[0] / "summary.json").exists()


def test_schema_1_bundle_is_read_with_a_warning(drift_bundle: DriftBundle) -> None:
    assert read_baseline(drift_bundle.repository, "toy", None).warnings == []
    old = drift_bundle.manifest.model_copy(update={"schema_version": 1})
    write_manifest(drift_bundle.path, old)
    baseline = read_baseline(drift_bundle.repository, "toy", None)
    assert baseline.version == 1
    assert any("training rows" in w for w in baseline.warnings)
