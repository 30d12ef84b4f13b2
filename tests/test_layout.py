"""The LSP-73 manifest: complete, consistent, and semantically right on a real face."""

from __future__ import annotations

from importlib import resources

import h5py
import numpy as np
import pytest
import tomllib

from lsp_prep.errors import InputError
from lsp_prep.layout import load_layout, parse_layout


def test_manifest_tiles_all_73_points():
    layout = load_layout()
    assert layout.n_points == 73
    assert len(set(layout.mediapipe_index.tolist())) == 73
    assert layout.groups["contour"] == tuple(range(15))
    assert layout.groups["lips_outer"] == tuple(range(46, 58))
    assert layout.groups["lips_inner"] == tuple(range(58, 64))
    assert layout.mouth.tolist() == [*range(4, 11), *range(46, 64)]
    drawn = {i for part in layout.draw for i in part.points}
    assert drawn == set(range(73)) - {44, 45, 64}  # pupils and glabella are not drawn


def _raw():
    return tomllib.loads(resources.files("manifests").joinpath("lsp73.toml").read_text())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["groups"].pop(), "without a MediaPipe index"),
        (lambda d: d["groups"][0]["mediapipe"].__setitem__(0, 999), ">= 478"),
        (lambda d: d["groups"][1]["mediapipe"].__setitem__(0, 234), "same MediaPipe index"),
        (lambda d: d["sets"]["mouth"].pop(), "25 points"),
        (lambda d: d["draw"][0]["points"].append(80), "outside 0..72"),
        (lambda d: d.pop("groups"), "malformed"),
    ],
)
def test_bad_manifests_are_refused(mutate, message):
    data = _raw()
    mutate(data)
    with pytest.raises(InputError, match=message):
        parse_layout(data)


def test_semantics_on_a_real_face(single_face_dataset):
    """Right (subject's) parts are on the image's left, lips below nose below eyes."""
    with h5py.File(single_face_dataset) as f:
        pts = f["landmarks/lsp73"][f["landmarks/valid"][:]]
    p = np.nanmedian(pts, axis=0)
    assert p[44, 0] < p[45, 0]  # right pupil left of left pupil in the image
    assert p[27, 0] < p[29, 0] < p[31, 0] < p[33, 0]  # eye corners, left to right
    assert p[46, 0] < p[49, 0] < p[52, 0]  # mouth corners around the upper-lip centre
    eyes_y = p[[28, 32], 1].mean()
    assert p[17, 1] < eyes_y < p[38, 1] < p[49, 1] < p[55, 1] < p[7, 1]
    # pupils inside their eyes
    for pupil, (a, b) in ((44, (27, 29)), (45, (31, 33))):
        assert min(p[a, 0], p[b, 0]) < p[pupil, 0] < max(p[a, 0], p[b, 0])


def test_lsp_prep_never_imports_torch():
    import subprocess
    import sys

    code = (
        "import sys, lsp_prep.pipeline, lsp_prep.dataset.schema, lsp_synth.render2d, "
        "lsp_synth.samples, cli.main; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
