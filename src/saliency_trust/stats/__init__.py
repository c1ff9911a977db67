"""Statistics: mixed-effects models, Tukey comparisons and PASS/FAIL decisions (SPEC 7)."""
