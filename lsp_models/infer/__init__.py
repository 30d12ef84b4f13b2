"""Inference: loading a run, motion from speech, streaming, video output (``lsp animate``)."""
