"""What a sealed segment's Parquet file carries besides its rows: statistics and dictionaries
where readers or the file size gain from them, not where they only cost the writer CPU."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from service.predlog.batches import columns_of, prediction_batch
from service.predlog.parquet_store import write_segment
from tests.service.test_predlog_one_row_flush import flush


def test_statistics_on_request_columns_only_and_no_dictionary_for_ids(tmp_path: Path) -> None:
    records = flush()  # logged at 1, 2 and 3 s; labels a, b, a
    batch = prediction_batch(records, columns_of(records[0]))
    path = tmp_path / "part.parquet"
    assert write_segment([batch], batch.schema, str(path), pafs.LocalFileSystem()) == 3
    group = pq.read_metadata(path).row_group(0)
    chunks = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    logged_at = chunks["logged_at"].statistics
    assert logged_at is not None and (logged_at.min, logged_at.max) == (1.0, 3.0)
    for name in ("features.x", "probabilities.a", "lower.b", "upper.a", "prediction_set.b"):
        stats = chunks[name].statistics
        assert stats is None or not stats.has_min_max, name
    assert not any("DICTIONARY" in e for e in chunks["request_id"].encodings)
    assert any("DICTIONARY" in e for e in chunks["label"].encodings)
    assert pq.read_table(path).to_pydict() == batch.to_pydict()
