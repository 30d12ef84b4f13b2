"""Torch models of a person: nets/ (the networks and their configs), sampling (head pose),
config (every training setting, presets), train/ (the loop, checkpoints, a module per
stage), infer/ (animate) and eval/.

Imports lsp_prep; lsp_prep never imports this package.
"""
