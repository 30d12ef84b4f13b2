"""Model-side defaults that several modules and the CLI share (importing this loads no torch)."""

OFFICIAL_TEMPERATURE = 0.3
"""The sigma scale the official inference samples head pose with (its configs' ``sigma``)."""

SAMPLING_TEMPERATURE = 0.7
"""The sigma scale head pose is sampled with by default: ``lsp animate --temperature``, the
streaming API and ``lsp eval``. Measured (benchmarks/headmotion.py, pexels, cpu-small): at
the official 0.3 this project's head-pose model moves at about half the recorded speed; at
1.0 about 1.3x (the 300-step model's sigma is still wide); 0.7 gives the recorded range
and speed within the run-to-run spread."""
