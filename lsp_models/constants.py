"""Model-side defaults that several modules and the CLI share (importing this loads no torch)."""

OFFICIAL_TEMPERATURE = 0.3
"""The sigma scale the official inference samples head pose with (its configs' ``sigma``)."""

SAMPLING_TEMPERATURE = 1.0
"""The sigma scale head pose is sampled with by default: ``lsp animate --temperature``, the
streaming API and ``lsp eval``; 1 samples the distribution the model learned. The official
0.3 was chosen for the official model (raw degrees, a 0.03 sigma floor, long training);
measured here (benchmarks/headmotion.py, pexels, cpu-small at 1000 steps) 0.7 and 1.0 give
about the same range, 1.0 about 1.3x the speed of 0.7, still below the recorded speed."""
