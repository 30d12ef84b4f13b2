"""Constants named once. Every other module imports them from here."""

from __future__ import annotations

FPS = 60
"""Canonical video frame rate of every dataset (frames per second)."""

SAMPLE_RATE = 16_000
"""Canonical audio sample rate (Hz)."""

IMAGE_SIZE = 512
"""Side of the square face crop (pixels)."""

MELS_PER_FRAME = 2
"""Log-mel frames per video frame: hop 1/120 s against 1/60 s video frames."""

N_MELS = 80
N_MESH_POINTS = 478
"""MediaPipe Face Mesh with refine_landmarks=True (468 face + 10 iris points)."""

N_FACE_POINTS = 468
"""Face Mesh points on the face surface (the iris points 468-477 are left out)."""

EYE_DISTANCE_CM = 9.0
"""Nominal distance between the outer eye corners, which sets the object-space unit
(centimetres) of prep's head tracks and of the test renderers."""

N_LSP_POINTS = 73
N_MOUTH_POINTS = 25
"""Mouth-related points of the LSP layout: jaw 4-10 plus lips 46-63."""
