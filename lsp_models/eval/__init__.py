"""``lsp eval``: held-out metrics of a trained run."""
