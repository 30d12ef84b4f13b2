"""Model-side defaults that several modules and the CLI share (importing this loads no torch)."""

OFFICIAL_TEMPERATURE = 0.3
"""The sigma scale the official inference samples head pose with: the default of
``lsp animate --temperature``, the streaming API and ``lsp eval``."""
