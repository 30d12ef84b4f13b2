"""Torch models, training loops and inference (next milestone). Imports lsp_prep, never the reverse."""
