"""Figures (docs/outputs.md). One style and one colour per method across all figures."""
