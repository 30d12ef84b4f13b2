"""The val split ``lsp eval`` measures on, read once from the dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsp_models.train.data import load_person
from lsp_prep.dataset.reader import DatasetReader
from lsp_prep.errors import InputError
from lsp_prep.layout import load_layout


@dataclass
class ValSplit:
    """What every eval section reads from the dataset."""

    mel: np.ndarray  # (2N, n_mels)
    mouth: np.ndarray  # (N, 25, 3) cm, NaN where not valid
    mean_mouth: np.ndarray  # (25, 3) the mean shape's mouth points
    valid: np.ndarray  # (N,)
    val: np.ndarray  # (V,) ascending


def read_val(dataset: Path) -> ValSplit:
    """The dataset's val split; InputError when it is empty or has no valid frame."""
    person = load_person(dataset)
    with DatasetReader(dataset) as ds:
        if not ds.has("track/mean_shape"):
            raise InputError(f"{dataset}: field 'track/mean_shape' is missing: re-run `lsp prep`")
        mean_shape = ds.read("track/mean_shape", np.float64)
    val = np.sort(np.asarray(person.val, np.int64))
    if len(val) == 0:
        raise InputError(f"{dataset}: the dataset has no val split (split/val is empty)")
    if not person.valid[val].any():
        raise InputError(f"{dataset}: none of the {len(val)} val frames has valid landmarks")
    return ValSplit(person.mel, person.mouth, mean_shape[load_layout().mouth], person.valid, val)
