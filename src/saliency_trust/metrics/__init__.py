"""Metrics: per-image trust criteria as tidy long tables (docs/criteria.md)."""
