"""CSV without a header row, label column by position, gzip-compressed ``.csv.gz``; each error's
advice followed through the CLI until the command succeeds."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from edgeproof.cli import main
from edgeproof.data.loading import load_data
from edgeproof.errors import DataFileError
from edgeproof.limits import override

ROWS = "0.5,1.0,0\n0.25,0.0,1\n1.0,0.75,1\n0.0,0.5,0\n"


def _train(data: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "train",
            "--arch",
            "zoo:mlp",
            "--data",
            str(data),
            "--epochs",
            "1",
            "--out",
            str(out / "m.safetensors"),
            *extra,
        ]
    )


def test_headerless_file_is_detected_and_the_last_column_is_the_label(tmp_path: Path) -> None:
    path = tmp_path / "nh.csv"
    path.write_text(ROWS)
    data = load_data(path, label_column=-1)
    np.testing.assert_array_equal(data.x, [[0.5, 1.0], [0.25, 0.0], [1.0, 0.75], [0.0, 0.5]])
    np.testing.assert_array_equal(data.y, [0, 1, 1, 0])
    assert data.metadata == {"label_column": 2, "header": False, "features": ["0", "1"]}
    assert data.ids[0] == "nh.csv#0"


def test_label_position_counts_from_the_start_or_the_end(tmp_path: Path) -> None:
    path = tmp_path / "first.csv"
    path.write_text("1,0.5,0.5\n0,0.25,0.0\n")
    by_start = load_data(path, label_column=0)
    by_end = load_data(path, label_column=-3)
    by_text = load_data(path, label_column="0")  # an integer string naming no column
    for data in (by_start, by_end, by_text):
        np.testing.assert_array_equal(data.y, [1, 0])
        np.testing.assert_array_equal(data.x, [[0.5, 0.5], [0.25, 0.0]])


def test_header_column_is_found_by_position_too(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("a,b,target\n1,2,1\n3,4,0\n")
    data = load_data(path, label_column=-1)
    np.testing.assert_array_equal(data.y, [1, 0])
    assert data.metadata["label_column"] == "target"
    assert data.metadata["features"] == ["a", "b"]


def test_a_header_name_wins_over_the_same_text_as_a_position(tmp_path: Path) -> None:
    path = tmp_path / "num.csv"
    path.write_text("x,0,y\n5,1,7\n6,0,8\n")  # column named "0" is the middle one
    data = load_data(path, label_column="0")
    np.testing.assert_array_equal(data.y, [1, 0])
    np.testing.assert_array_equal(data.x, [[5, 7], [6, 8]])


def test_headerless_file_with_class_names_is_detected_as_data(tmp_path: Path) -> None:
    path = tmp_path / "iris.csv"
    path.write_text("5.1,3.5,Iris-setosa\n7.0,3.2,Iris-versicolor\n6.3,3.3,Iris-setosa\n")
    data = load_data(path, label_column=-1)
    assert data.classes == ["Iris-setosa", "Iris-versicolor"]
    np.testing.assert_array_equal(data.y, [0, 1, 0])
    assert data.metadata["header"] is False
    named = tmp_path / "named.csv"
    named.write_text("length,width,species\n5.1,3.5,Iris-setosa\n")
    assert load_data(named, label_column="species").metadata["header"] is True


def test_explicit_header_flag_overrides_detection(tmp_path: Path) -> None:
    path = tmp_path / "numbers-as-names.csv"
    path.write_text("1,2,3\n0.5,0.5,1\n0.0,0.25,0\n")
    named = load_data(path, header=True, label_column="3")
    assert named.metadata["features"] == ["1", "2"]
    assert len(named.y) == 2
    detected = load_data(path, label_column=-1)
    assert len(detected.y) == 3  # auto: the first row is numbers, so it is data
    text = tmp_path / "words.csv"
    text.write_text("a,b,c\n0.5,0.5,1\n")
    with pytest.raises(DataFileError, match=r"column 0 has non-numeric value 'a' at line 1"):
        load_data(text, header=False, label_column=-1)


def test_gzip_file_reads_like_the_plain_one(tmp_path: Path) -> None:
    plain = tmp_path / "t.csv"
    plain.write_text("a,b,label\n" + ROWS)
    packed = tmp_path / "t.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = load_data(plain), load_data(packed)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert b.format == "csv"
    assert b.ids[0] == "t.csv.gz#0"


def test_gzip_limit_applies_to_the_decompressed_text(tmp_path: Path) -> None:
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(b"a,label\n" + b"0,0\n" * 5000))
    assert path.stat().st_size < 1000
    with override(max_text_bytes=10_000), pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value).startswith(f"{path}: the decompressed CSV")


def test_not_gzip_under_a_gz_name_says_so(tmp_path: Path) -> None:
    path = tmp_path / "fake.csv.gz"
    path.write_text("a,label\n1,0\n")
    with pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value).startswith(f"{path}: is not a readable gzip file (")
    assert str(info.value).endswith(
        "Compress it with gzip, or drop the .gz from its name if it is plain text"
    )


def test_label_position_out_of_range_gives_the_column_count(tmp_path: Path) -> None:
    path = tmp_path / "nh.csv"
    path.write_text(ROWS)
    with pytest.raises(DataFileError) as info:
        load_data(path, label_column=3)
    assert str(info.value) == (
        f"{path}: has 3 columns, so there is no label column at position 3 (positions 0..2, or "
        "-3..-1 from the end). Give label_column a position in that range, e.g. -1 for the "
        "last column"
    )


def test_ragged_headerless_row_is_named_against_the_first_row(tmp_path: Path) -> None:
    path = tmp_path / "rag.csv"
    path.write_text("1,2,0\n\n3,4\n")
    with pytest.raises(DataFileError) as info:
        load_data(path, label_column=-1)
    assert str(info.value) == (
        f"{path}: line 3 has 2 fields but the first row has 3. Give every row one value per column"
    )


def test_headerless_non_numeric_cell_names_column_position_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("1,2,0\n3,x,1\n")
    with pytest.raises(DataFileError) as info:
        load_data(path, label_column=-1)
    assert str(info.value) == (
        f"{path}: column 1 has non-numeric value 'x' at line 2. Feature columns must hold "
        "numbers; encode or drop the column, or make it the label column (label_column)"
    )


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "e.csv.gz"
    path.write_bytes(gzip.compress(b"\n\n"))
    with pytest.raises(DataFileError, match=r"e\.csv\.gz: is empty\."):
        load_data(path)


# ---------------------------------------------- the CLI: each error's advice, followed, works


def test_cli_headerless_file_advice_label_column_minus_one_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nh.csv.gz"
    path.write_bytes(gzip.compress(ROWS.encode()))
    assert _train(path, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"edgeproof: error: {path}: has no header row (its first row is numbers), so no column "
        "is named 'label' (3 columns). Give the label column by position with --label-column "
        "(-1 for the last column), or --header if the first row names the columns"
    )
    assert _train(path, tmp_path, "--label-column", "-1") == 0
    assert (tmp_path / "m.safetensors").is_file()


def test_cli_header_advice_works_for_numeric_column_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "names.csv"
    path.write_text("1,2,label\n" + ROWS)  # "label" is not a number: detected as a header
    assert _train(path, tmp_path / "a") == 0
    path.write_text("10,20,30\n" + ROWS)  # numeric names: detected as data, 5 rows
    assert _train(path, tmp_path / "b", "--label-column", "30") == 2
    err = capsys.readouterr().err
    assert err.strip().endswith(
        "e.g. -1 for the last column, or pass --header if the first row (numbers only, so read "
        "as data) names the columns"
    )
    assert _train(path, tmp_path / "b", "--label-column", "30", "--header") == 0


def test_cli_missing_label_name_advice_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nl.csv"
    path.write_text("a,b,class\n" + ROWS)
    assert _train(path, tmp_path) == 2
    err = capsys.readouterr().err
    assert "has no label column 'label' (columns: a, b, class). Name the label column with " in err
    assert "--label-column, by name or by position (-1 for the last)" in err
    assert _train(path, tmp_path / "n", "--label-column", "class") == 0
    assert _train(path, tmp_path / "p", "--label-column", "-1") == 0


def test_cli_out_of_range_position_advice_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nh.csv"
    path.write_text(ROWS)
    assert _train(path, tmp_path, "--label-column", "5") == 2
    assert "Give --label-column a position in that range, e.g. -1" in capsys.readouterr().err
    assert _train(path, tmp_path, "--label-column", "-1") == 0


def test_cli_non_numeric_cell_advice_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lab.csv"
    path.write_text("0.5,1.0,cat\n0.25,0.0,dog\n1.0,0.75,dog\n")
    assert _train(path, tmp_path, "--label-column", "0") == 2
    err = capsys.readouterr().err
    assert "column 2 has non-numeric value 'cat' at line 1" in err
    assert "or make it the label column (--label-column)" in err
    assert _train(path, tmp_path, "--label-column", "2") == 0
