"""The conditional feature map: projection and drawing, on a real prepped clip."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from lsp_prep.errors import InputError
from lsp_prep.featuremap import billboard_points2d, draw_feature_map, face_points2d
from lsp_prep.layout import load_layout


def test_projection_matches_tracked_landmarks_and_lines_lie_on_them(single_face_dataset):
    with h5py.File(single_face_dataset) as f:
        i = 60
        p2 = face_points2d(
            f["track/points3d"][i],
            f["track/rotation"][i],
            f["track/translation"][i],
            f["camera/intrinsics"][i],
        )
        lsp = f["landmarks/lsp73"][i]
        sh = f["shoulders/points2d"][i]
        # batched over frames gives the same
        pn = face_points2d(
            f["track/points3d"][:],
            f["track/rotation"][:],
            f["track/translation"][:],
            f["camera/intrinsics"][:],
        )
        bb = f["shoulders/billboard3d"][:]
        k0 = f["camera/intrinsics"][0]
        sh0, ok0 = f["shoulders/points2d"][0], f["shoulders/valid"][0]
    np.testing.assert_allclose(pn[i], p2, atol=1e-6)
    # the perspective fit reprojects onto the 2D detections within a few pixels
    assert np.median(np.linalg.norm(p2 - lsp, axis=1)) < 6.0
    fm = draw_feature_map(p2, sh)
    assert fm.shape == (512, 512) and fm.dtype == np.uint8
    ink = fm > 127
    assert 0.005 < ink.mean() < 0.05
    # every drawn vertex is inked, and almost all ink is near a polyline vertex or segment
    layout = load_layout()
    used = sorted({j for part in layout.draw for j in part.points})
    xs, ys = np.round(p2[used]).astype(int).T
    assert ink[ys.clip(0, 511), xs.clip(0, 511)].mean() > 0.95
    # the billboard projects back to the first frame's shoulder points
    np.testing.assert_allclose(billboard_points2d(bb, k0)[ok0], sh0[ok0], atol=1e-3)


def test_drawing_handles_points_off_the_image_and_nan():
    layout = load_layout()
    pts = np.random.default_rng(0).uniform(-2e6, 2e6, (layout.n_points, 2))
    pts[3] = np.nan
    fm = draw_feature_map(pts, np.full((8, 2), np.nan), size=128)
    assert fm.shape == (128, 128)
    with pytest.raises(InputError, match=r"face2d must be \(73, 2\)"):
        draw_feature_map(np.zeros((68, 2)))
