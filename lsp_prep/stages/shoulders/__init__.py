"""Stage ``shoulders``: upper-body points (MediaPipe Pose), LK tracks, billboard depth."""
