"""The dataset contract (schema), and the per-output manifest of prepared clips."""
