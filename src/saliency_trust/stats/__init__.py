"""Statistics: mixed-effects models, Tukey comparisons and PASS/FAIL decisions (docs/criteria.md)."""
