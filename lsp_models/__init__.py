"""Torch models, training loops and inference (next milestone).

Imports lsp_prep; lsp_prep never imports this package.
"""
