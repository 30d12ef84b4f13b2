"""The dataset contract: validate() catches what a reader would trip over.

The contract tests edit a copy of the synthetic dataset (conftest, written by the dataset
writer); only the size budget needs the real prepped clip."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from lsp_prep.dataset import reader, schema
from lsp_prep.errors import SchemaError


def _edit(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.attrs.__setitem__("schema_version", 0), "re-run `lsp prep`"),
        (lambda f: f.attrs.__delitem__("schema_version"), "not an LSP dataset"),
        (lambda f: f.attrs.__delitem__("source_sha256"), "missing root attribute 'source_sha256'"),
        (lambda f: f.__delitem__("audio/mel"), "missing field 'audio/mel'"),
        (
            lambda f: (
                f.__delitem__("audio/mel"),
                f.create_dataset("audio/mel", data=np.zeros((3, 80))),
            ),
            "audio/mel: shape (3, 80)",
        ),
        (lambda f: f["landmarks/lsp73"].__setitem__(0, np.nan), "non-finite values on valid"),
        (lambda f: f["crop/boxes"].__setitem__(0, [0, 0, 10, 20]), "not finite squares"),
        (lambda f: f.attrs.__setitem__("n_frames", 3), "attribute n_frames=3"),
    ],
)
def test_validate_reports_problems(synthetic_copy, edit, message):
    _edit(synthetic_copy, edit)
    with pytest.raises(SchemaError, match=re.escape(message)):
        schema.validate(synthetic_copy)


def test_synthetic_dataset_is_valid(synthetic_dataset):
    dims = schema.validate(synthetic_dataset)
    assert dims["N"] == 36 and dims["M"] == 72


def test_validate_lists_every_problem_at_once(synthetic_copy):
    def two_problems(f):
        f.__delitem__("split/val")
        f.attrs.__delitem__("source_sha256")

    _edit(synthetic_copy, two_problems)
    with pytest.raises(SchemaError) as info:
        schema.validate(synthetic_copy)
    assert "missing field 'split/val'" in str(info.value)
    assert "missing root attribute 'source_sha256'" in str(info.value)


def test_truncated_dataset_is_named(synthetic_copy):
    synthetic_copy.write_bytes(synthetic_copy.read_bytes()[:4000])
    with pytest.raises(SchemaError, match="not an HDF5 file"):
        schema.validate(synthetic_copy)


def test_open_dataset_refuses_other_versions(synthetic_copy):
    _edit(synthetic_copy, lambda f: f.attrs.__setitem__("schema_version", 99))
    with pytest.raises(SchemaError, match="version 99"):
        reader.open_dataset(synthetic_copy)


def test_not_hdf5(tmp_path):
    p = tmp_path / "x.h5"
    p.write_text("nope")
    with pytest.raises(SchemaError, match="not an HDF5 file"):
        schema.validate(p)


def test_doc_page_describes_every_field_and_attribute():
    doc = (Path(__file__).parents[1] / "docs" / "dataset.md").read_text()
    for name in [f.name for f in schema.FIELDS] + [a.name for a in schema.ROOT_ATTRS]:
        assert f"`{name}`" in doc, f"docs/dataset.md does not mention `{name}`"
    assert f"schema_version = {schema.SCHEMA_VERSION}" in doc


def test_size_budget(single_face_dataset):
    """5 minutes at 60 FPS must fit in about 1.5 GB: extrapolate from the real clip."""
    with h5py.File(single_face_dataset) as f:
        frame_bytes = sum(len(b) for b in f["frames"][:]) / f["frames"].shape[0]
        per_frame_other = (
            single_face_dataset.stat().st_size - frame_bytes * f["frames"].shape[0]
        ) / f["frames"].shape[0]
    five_min = 5 * 60 * 60 * (frame_bytes + per_frame_other)
    assert five_min < 1.5e9, f"{five_min / 1e9:.2f} GB"
