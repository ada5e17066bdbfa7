"""Arrow arrays from buffers: exact values, nulls and bitmaps, and no pandas in the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

from service.predlog.arrow_arrays import numbers, strings, texts


def test_floats_keep_their_values_and_nan_becomes_null_only_when_asked() -> None:
    values = np.array([1.5, np.nan, -2.0], dtype=np.float32)
    kept = numbers(values)
    assert kept.type == pa.float32()
    assert kept.null_count == 0
    assert np.isnan(kept.to_numpy(zero_copy_only=False)[1])
    nulled = numbers(values, nan_is_null=True)
    assert nulled.to_pylist() == [1.5, None, -2.0]
    # validity bitmap, least significant bit first: rows 0 and 2 present -> 0b101
    assert nulled.buffers()[0].to_pybytes()[0] & 0b111 == 0b101


def test_a_float_column_without_nan_has_no_validity_bitmap() -> None:
    assert numbers(np.array([0.25, 0.75]), nan_is_null=True).buffers()[0] is None


def test_integers_and_a_strided_column_are_stored_as_they_read() -> None:
    assert numbers(np.array([3, -1], dtype=np.int32)).to_pylist() == [3, -1]
    matrix = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert numbers(matrix[:, 1]).to_pylist() == [2.0, 4.0, 6.0]  # a view with a stride of 2


def test_booleans_are_bit_packed_across_a_byte_boundary() -> None:
    flags = np.array([True, False, False, True, False, False, False, False, True, True])
    array = numbers(flags)
    assert array.type == pa.bool_()
    assert array.to_pylist() == flags.tolist()
    # bits 0 and 3 of the first byte (0b1001 = 9), bits 0 and 1 of the second (0b11 = 3)
    assert array.buffers()[1].to_pybytes()[:2] == bytes([9, 3])


def test_a_dtype_the_log_does_not_store_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="complex128"):
        numbers(np.array([1j]))


def test_strings_store_text_numbers_as_text_and_missing_values_as_null() -> None:
    values = ["a", None, "", float("nan"), 7, "é"]
    assert strings(values).to_pylist() == ["a", None, "", None, "7", "é"]
    assert strings(values, empty_is_null=True).to_pylist() == ["a", None, None, None, "7", "é"]
    array = strings(["ab", "", "c"])
    # offsets are byte positions: "ab" 0-2, "" 2-2, "c" 2-3
    assert np.frombuffer(array.buffers()[1], dtype=np.int32)[:4].tolist() == [0, 2, 2, 3]
    assert array.null_count == 0


def test_texts_encode_utf8_and_validate_as_arrow_strings() -> None:
    array = texts(["req-1", "ünï", ""])
    array.validate(full=True)
    assert array.to_pylist() == ["req-1", "ünï", ""]
    assert texts([]).to_pylist() == []


def test_building_a_whole_log_batch_never_imports_pandas() -> None:
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import pyarrow as pa
        from service.predlog.arrow_arrays import numbers, strings, texts
        batch = pa.RecordBatch.from_arrays(
            [numbers(np.array([0.5, np.nan]), nan_is_null=True), numbers(np.array([True, False])),
             strings(["x", None]), texts(["a", "b"])],
            names=["f", "b", "s", "t"],
        )
        assert batch.num_rows == 2
        print("pandas" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"
