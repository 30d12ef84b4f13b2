"""The one dataset reader: typed reads, the schema version refused, damaged files named."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from lsp_prep.config import PrepConfig
from lsp_prep.dataset import schema, writer
from lsp_prep.dataset.reader import DatasetReader
from lsp_prep.errors import InputError, SchemaError


def _tiny(path: Path, version: int = schema.SCHEMA_VERSION) -> Path:
    """A small file with the root attribute and a few fields (not a whole valid dataset)."""
    with h5py.File(path, "w") as f:
        f.attrs["schema_version"] = version
        f.attrs["image_size"] = 64
        f.attrs["config"] = '{"crop": {"offset_y": 0.1}}'
        f.create_dataset("split/train", data=np.arange(0, 30, dtype=np.int64))
        f.create_dataset("track/rotation", data=np.arange(300, dtype=np.float32).reshape(100, 3))
        jpegs = f.create_dataset("frames", (4,), dtype=writer.jpeg_dtype())
        for i in range(4):
            jpegs[i] = np.full(i + 1, i, np.uint8)
    return path


def test_reads_typed_arrays_and_attributes(tmp_path):
    with DatasetReader(_tiny(tmp_path / "a.h5")) as ds:
        assert ds.crop_side == 64
        assert ds.config() == {"crop": {"offset_y": 0.1}}
        assert ds.split("train").dtype == np.int64
        rot = ds.read("track/rotation", np.float64)
        assert rot.dtype == np.float64 and rot.shape == (100, 3)
        rows = np.array([3, 5, 9])
        np.testing.assert_array_equal(ds.read_rows("track/rotation", rows), rot[rows])
        assert [len(j) for j in ds.jpegs(np.array([2, 0, 2]))] == [3, 1, 3]
        assert ds.has("frames") and not ds.has("track/points3d")
        with pytest.raises(SchemaError, match=r"'track/points3d' is missing.*geometry"):
            ds.require({"track/points3d": "geometry"})
        with pytest.raises(InputError, match="split must be one of"):
            ds.split("test")


def test_reads_what_the_writer_wrote(synthetic_dataset):
    """A whole dataset from the writer (conftest's synthetic one) reads back field by field."""
    with DatasetReader(synthetic_dataset) as ds:
        assert ds.crop_side == 64 and ds.shape("landmarks/lsp73") == (36, 73, 2)
        ds.require(["track/points3d", "shoulders/points2d", "candidates/images"])
        assert ds.config()["crop"] == PrepConfig().to_dict()["crop"]
        val = ds.split("val")
        assert val.dtype == np.int64 and val.max() == 35 and ds.split("train").max() < val.min()
        frame = cv2.imdecode(ds.jpegs(val[:1])[0], cv2.IMREAD_COLOR)
        assert frame.shape == (64, 64, 3)


def test_truncated_dataset_fails_in_one_line(synthetic_copy):
    synthetic_copy.write_bytes(synthetic_copy.read_bytes()[:20_000])
    with pytest.raises(InputError, match="re-run `lsp prep`") as info:
        DatasetReader(synthetic_copy)
    assert "\n" not in str(info.value) and str(synthetic_copy) in str(info.value)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda p: p.write_bytes(b"not an hdf5 file at all" * 10), InputError, "not a readable"),
        (lambda p: p.write_bytes(_tiny(p).read_bytes()[:600]), InputError, "truncated"),
        (lambda p: _tiny(p, version=1), SchemaError, "schema version 1"),
        (lambda p: None, SchemaError, "no such dataset file"),
    ],
)
def test_bad_files_fail_in_one_line(tmp_path, make, error, message):
    path = tmp_path / "bad.h5"
    make(path)
    with pytest.raises(error, match=message) as info:
        DatasetReader(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text
    if error is InputError:
        assert "re-run `lsp prep`" in text
