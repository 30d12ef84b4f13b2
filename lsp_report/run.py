"""The run report (placeholder until written)."""
