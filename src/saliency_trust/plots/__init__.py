"""Figures (SPEC 8). One style and one colour per method across all figures."""
