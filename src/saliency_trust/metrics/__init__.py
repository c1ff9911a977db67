"""Metrics: per-image trust criteria as tidy long tables (SPEC 6)."""
