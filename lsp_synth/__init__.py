"""Test and benchmark support, outside the runtime packages: rendered clips with known
camera and motion, and real sample media fetched from registry packages.

Nothing in ``lsp_prep`` or ``lsp_models`` imports this package."""
