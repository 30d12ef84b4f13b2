"""Stage ``shoulders``, the upper-body model: feature points tracked with LK optical flow,
on a billboard.

The paper models the upper body as a plane ("billboard") at the mean face depth carrying a
few feature points chosen on the first frame and tracked through the clip with pyramidal
Lucas-Kanade optical flow. Three pure functions do that, each on arrays, each in its
module (:mod:`.config` holds the section ``shoulders``, :mod:`.stage` the I/O wrapper;
:mod:`.pose`, :mod:`.place` and :mod:`.image` are :func:`.choose.choose_points`'s helpers):

* :func:`.choose.choose_points` picks the points on frame 0: MediaPipe Pose (shoulder
  landmarks 11 and 12 plus its person segmentation) and the face outline define the
  upper-body region below the chin, away from the face and neck (which move with the
  head); in it the most trackable spots (largest minimum eigenvalue of the LK window's
  structure tensor) are taken, half on each side of the neck. Where the clothing has too
  little texture the remaining points go on the shoulder outline; in a close-up without
  shoulders, below the face (with a warning, never an error). ``shoulders.points``
  overrides all this.
* :func:`.lk.track_points` follows them frame to frame with a forward-backward checked
  LK; a point that fails the checks is invalid on that frame and is re-seeded later by a
  direct LK from the last frame where it was valid, started at the position the other
  points' motion predicts.
* :func:`.billboard.billboard` back-projects the points to the plane ``z = depth``
  through the camera.

Coordinates are pixel centres of the image given (the 512x512 crop in the dataset), ``x``
to the right and ``y`` down; "left" and "right" below are the image's, not the subject's.
"""
