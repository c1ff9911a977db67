"""Data: the canonical dataset, the synthetic benchmark and splits (docs/own-data.md)."""
