"""Stage ``geometry``: focal length, 3D head pose per frame, object-space landmarks.

:mod:`.head` is the stage (and the features stage's refinement); :mod:`.config` holds its
sections ``camera`` and ``geometry``; :mod:`.focal` the focal search over
:mod:`.bundle`'s bundle adjustment; :mod:`.poses` the batched pose fit; :mod:`.shape`
rigid shapes, triangulation and object-space points.
"""
