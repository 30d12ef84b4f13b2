"""Test and benchmark support, outside the runtime packages: rendered clips with known
camera and motion, and real sample media fetched from registry packages.

Nothing in ``lsp_prep`` or ``lsp_models`` imports this package. What is where (each
module imports only the ones listed above it, and ``lsp_prep``):

Shared
    ``files``      :func:`~lsp_synth.files.atomic_path`, the one atomic file writer
    ``samples``    real sample media (photos, clips, speech) from pinned PyPI wheels
    ``audio``      WAV writing; :func:`~lsp_synth.audio.speech_envelope`, the speech
                   loudness that opens a rendered mouth
    ``encode``     clip files: frame times, H.264 (+ AAC) through ffmpeg, rotation
                   metadata, muxing audio into a clip
    ``portraits``  the sample portraits (astronaut, stranger), their crops and face
                   boxes; reading and checking RGB images
    ``layers``     backgrounds, soft-edged RGBA layers with per-frame affines, compositing

2D clips (a photo moved by a known similarity transform)
    ``render2d``   :class:`~lsp_synth.render2d.Motion`, :class:`~lsp_synth.render2d.Truth`,
                   :func:`~lsp_synth.render2d.render_talking_clip`,
                   :func:`~lsp_synth.render2d.two_faces_clip`

3D clips (a textured head mesh moved by a known pose under a known camera)
    ``pinhole``    :class:`~lsp_synth.pinhole.Camera`, rotation vectors as matrices
    ``mesh``       the textured face mesh built from a photo (MediaPipe indices, jaw
                   weights, skirt): :func:`~lsp_synth.mesh.face_model`
    ``raster``     the painter's rasteriser: :func:`~lsp_synth.raster.render_head_frame`
    ``torso``      the shoulder plane behind the head and its tracked points
    ``expression`` a real clip's expressions (rigid part removed, skull kept rigid) and a
                   hand-like occluder, for expressive renders
    ``speaker``    the speech-driven speaker: a documented rule from audio to jaw, lips,
                   width and rounding (the mouth leading the sound), blinks; the mesh
                   deformed by it, the skull rigid
    ``render3d``   the conventions, Euler angles, :class:`~lsp_synth.render3d.HeadMotion`,
                   :class:`~lsp_synth.render3d.Truth3D`,
                   :func:`~lsp_synth.render3d.render_head_clip`
"""
