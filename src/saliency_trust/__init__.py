"""saliency-trust: can the saliency maps of an imaging classifier be trusted?

Reproduces the evaluation framework of Arun et al. (seeds/001): localization
utility, sensitivity to weight randomization, repeatability and
reproducibility, with mixed-effects statistics and a PASS/FAIL table.

One subpackage per concern:

- :mod:`saliency_trust.data`     canonical dataset, synthetic benchmark, splits
- :mod:`saliency_trust.models`   architecture registry and training
- :mod:`saliency_trust.saliency` saliency method registry, post-processing, HDF5 cache
- :mod:`saliency_trust.metrics`  per-image trust criteria (tidy long tables)
- :mod:`saliency_trust.stats`    mixed-effects models, Tukey comparisons, PASS/FAIL
- :mod:`saliency_trust.plots`    figures
"""

__version__ = "0.1.0"
