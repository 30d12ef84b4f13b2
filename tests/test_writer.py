"""The dataset writer on its own: a small complete dataset from numpy arrays, no prep."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from lsp_prep.config import PrepConfig
from lsp_prep.dataset import reader, schema, writer
from lsp_prep.errors import SchemaError

N, P, SIZE = 6, 4, 32


def _arrays(n: int = N) -> dict[str, np.ndarray]:
    """Every field but the frames, with the schema's shapes and dtypes."""
    rng = np.random.default_rng(0)
    sizes = {"N": n, "M": 2 * n, "S": n * 16_000 // 60, "F": 5, "P": P, "I": SIZE, "T": 4}
    sizes["V"] = n - 4
    fields = {}
    for fld in schema.FIELDS[1:]:
        shape = tuple(s if isinstance(s, int) else sizes[s] for s in fld.shape)
        kind = {"f": np.float32, "i": np.int64, "u": np.uint8, "b": bool}[fld.dtype]
        fields[fld.name] = (rng.random(shape) * 10).astype(kind)
    fields["crop/boxes"] = np.tile([10.0, 20.0, 110.0, 120.0], (n, 1))
    for k in ("valid", "detected"):
        fields[f"landmarks/{k}"] = np.ones(n, bool)
    fields["landmarks/interpolated"] = np.zeros(n, bool)
    return fields


def _attrs(n: int = N) -> dict:
    return {
        "fps": 60,
        "sample_rate": 16_000,
        "image_size": SIZE,
        "hop_length": 16_000 / 120,
        "n_frames": n,
        "source_path": "synthetic",
        "source_sha256": "0" * 64,
        "audio_sha256": "",
        "lsp_version": "test",
        "config": json.dumps(PrepConfig().to_dict()),
        "source_info": "{}",
    }


def test_write_dataset_from_arrays_validates(tmp_path):
    images = np.random.default_rng(1).integers(0, 255, (N, SIZE, SIZE, 3), dtype=np.uint8)
    path = writer.write_dataset(
        tmp_path / "tiny.h5",
        frames=images,
        fields=_arrays(),
        attrs=_attrs(),
        group_attrs={"shoulders": {"source": "user"}},
    )
    dims = schema.validate(path)
    assert dims["N"] == N and not list(tmp_path.glob(".*tmp*"))
    with reader.open_dataset(path) as f:
        assert f.attrs["schema_version"] == schema.SCHEMA_VERSION
        assert f["shoulders"].attrs["source"] == "user"
        frame = writer.cv2.imdecode(f["frames"][2], writer.cv2.IMREAD_COLOR)
        assert frame.shape == (SIZE, SIZE, 3)
        np.testing.assert_array_equal(f["audio/mel"][:], _arrays()["audio/mel"])
        assert PrepConfig.from_dict(reader.read_config(f)) == PrepConfig()


def test_write_dataset_refuses_incomplete_and_leaves_nothing(tmp_path):
    fields = _arrays()
    del fields["split/val"]
    jpegs = [writer.encode_jpeg(np.zeros((SIZE, SIZE, 3), np.uint8), quality=90)] * N
    with pytest.raises(SchemaError, match="missing field 'split/val'"):
        writer.write_dataset(tmp_path / "bad.h5", frames=jpegs, fields=fields, attrs=_attrs())
    assert list(tmp_path.iterdir()) == []


def test_read_config_names_old_sections_as_today(tmp_path):
    """Datasets written before the sections were named as their stages stay readable."""
    old = PrepConfig().to_dict()
    old["landmarks"], old["track"] = old.pop("track"), old.pop("geometry")
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f.attrs["config"] = json.dumps(old)
        assert PrepConfig.from_dict(reader.read_config(f)) == PrepConfig()
