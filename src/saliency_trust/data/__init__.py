"""Data: the canonical dataset (SPEC 3.1), the synthetic benchmark (SPEC 3.2) and splits."""
