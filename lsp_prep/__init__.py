"""LSP toolkit: video -> dataset. Never imports torch."""

__version__ = "0.1.0"
