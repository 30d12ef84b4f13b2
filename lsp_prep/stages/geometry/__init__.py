"""Stage ``geometry``: focal length, 3D head pose per frame, object-space landmarks."""
