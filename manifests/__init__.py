"""Declarative data: landmark layouts and presets. Loaded by code, never imported for logic."""
