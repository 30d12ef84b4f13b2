"""Crop boxes: square, fixed size, smooth, exact inverse mapping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lsp_prep.camera import to_crop, to_original
from lsp_prep.errors import InputError
from lsp_prep.stages.crop import CropConfig, crop_boxes, crop_frame


def _track(n=600, fps=60, jitter=3.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps
    centres = np.stack([640 + 40 * np.sin(0.3 * t), 360 + 20 * np.cos(0.2 * t)], 1)
    return centres + rng.normal(0, jitter, (n, 2)), np.full(n, 200.0) + rng.normal(0, 5, n)


def test_boxes_are_fixed_size_squares_and_smooth():
    centres, sizes = _track()
    valid = np.ones(len(sizes), bool)
    boxes = crop_boxes(centres, sizes, valid, fps=60, frame_size=(1280, 720))
    side = boxes[:, 2] - boxes[:, 0]
    np.testing.assert_allclose(side, boxes[:, 3] - boxes[:, 1])
    np.testing.assert_allclose(side, side[0])
    assert side[0] == pytest.approx(CropConfig().scale * 200, rel=0.02)
    raw_jitter = np.abs(np.diff(centres[:, 0], 2)).mean()
    box_jitter = np.abs(np.diff(boxes[:, 0], 2)).mean()
    assert box_jitter < raw_jitter / 50  # the crop does not shake with the landmarks
    # ... but it still follows the slow motion
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    assert np.corrcoef(cx, 640 + 40 * np.sin(0.3 * np.arange(600) / 60))[0, 1] > 0.99


def test_invalid_frames_take_interpolated_centres_and_none_valid_is_an_error():
    centres, sizes = _track(jitter=0)
    valid = np.ones(len(sizes), bool)
    valid[100:200] = False
    centres[100:200] = np.nan
    boxes = crop_boxes(centres, sizes, valid, fps=60, frame_size=(1280, 720))
    assert np.isfinite(boxes).all()
    with pytest.raises(InputError, match="no valid face"):
        crop_boxes(centres, sizes, np.zeros(len(sizes), bool), fps=60, frame_size=(1280, 720))


def test_box_stays_inside_the_frame_when_it_fits():
    centres = np.array([[10.0, 10.0], [1270.0, 710.0]])
    boxes = crop_boxes(
        centres,
        np.array([100.0, 100.0]),
        np.ones(2, bool),
        fps=60,
        frame_size=(1280, 720),
        config=CropConfig(smoothing_s=0),
    )
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 1280).all() and (boxes[:, 3] <= 720).all()


@pytest.mark.parametrize(
    ("side", "prescale"),
    [(200.0, 1.0), (1000.0, 1.0), (700.0, 1.0), (2500.0, 1.0), (1000.0, 0.71), (900.0, 0.5)],
)
def test_crop_frame_matches_the_point_mapping(side, prescale):
    """A bright dot lands in the crop where to_crop says it does, also from a frame the
    decoder already downscaled; to_original inverts the mapping."""
    frame = np.zeros((1080, 1920, 3), np.uint8)
    dot = np.array([903.0, 517.0])
    frame[517 - 3 : 517 + 4, 903 - 3 : 903 + 4] = 255
    box = np.array([[800.3, 400.7, 800.3 + side, 400.7 + side]])
    scale = (1.0, 1.0)
    if prescale != 1.0:
        w, h = round(1920 * prescale), round(1080 * prescale)
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        scale = (w / 1920, h / 1080)
    crop = crop_frame(frame, box[0], 512, frame_scale=scale).astype(float)[..., 0]
    ys, xs = np.mgrid[:512, :512]
    found = np.array([(xs * crop).sum(), (ys * crop).sum()]) / crop.sum()
    expect = to_crop(dot[None, None], box, 512)[0, 0]
    np.testing.assert_allclose(found, expect, atol=0.6)
    np.testing.assert_allclose(to_original(expect[None, None], box, 512)[0, 0], dot, atol=1e-9)
