"""Our LSP-73 points against an independent detector: dlib's 68-point shape predictor.

dlib-bin and face_recognition_models are test-only dependencies. The model file is found
with importlib (importing face_recognition_models needs pkg_resources, which recent
setuptools no longer has).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from lsp_prep.layout import load_layout
from lsp_prep.stages.track import FaceMeshTracker

dlib = pytest.importorskip("dlib")

# (LSP-73 index, dlib-68 index): outer and inner eye corners, mouth corners
PAIRS = [(27, 36), (29, 39), (31, 42), (33, 45), (46, 48), (52, 54)]


def _predictor():
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        pytest.skip("face_recognition_models is not installed")
    path = Path(spec.origin).parent / "models" / "shape_predictor_68_face_landmarks.dat"
    return dlib.shape_predictor(str(path))


def _images(media) -> dict[str, np.ndarray]:
    from lsp_prep.media import iter_frames, probe

    out = {"astronaut": cv2.cvtColor(cv2.imread(str(media["astronaut"])), cv2.COLOR_BGR2RGB)}
    for name, k in (("single_face", 40), ("pexels", 30), ("pexels", 900), ("carphone", 100)):
        info = probe(media[name])
        for i, frame in enumerate(iter_frames(media[name], fps=60, size=(info.width, info.height))):
            if i == k:
                out[f"{name}[{k}]"] = frame.copy()
                break
    return out


def test_eye_and_mouth_corners_agree_with_dlib(media):
    predictor = _predictor()
    detector = dlib.get_frontal_face_detector()
    layout = load_layout()
    report = {}
    for name, rgb in _images(media).items():
        if min(rgb.shape[:2]) < 300:  # dlib's HOG detector needs faces of ~80 px
            rgb = cv2.resize(rgb, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
        with FaceMeshTracker() as tracker:
            mesh = tracker(rgb)
        assert mesh is not None, name
        ours = layout.from_mesh(mesh[None])[0, :, :2]
        faces = detector(rgb, 1)
        assert len(faces) >= 1, f"dlib found no face in {name}"
        face = max(faces, key=lambda r: r.area())
        shape = predictor(rgb, face)
        theirs = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], float)
        iod = np.linalg.norm(theirs[36] - theirs[45])
        err = [np.linalg.norm(ours[a] - theirs[b]) / iod for a, b in PAIRS]
        report[name] = np.round(err, 3)
        assert max(err) <= 0.05, f"{name}: corner errors / outer-eye distance = {report[name]}"
    print("corner error / outer-eye distance:", report)
