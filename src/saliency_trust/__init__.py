"""saliency-trust: can the saliency maps of an imaging classifier be trusted?

Reproduces the evaluation framework of Arun et al. (Radiology: Artificial
Intelligence 2021; doi:10.1148/ryai.2021200267): localization
utility, sensitivity to weight randomization, repeatability and
reproducibility, with mixed-effects statistics and a PASS/FAIL table.

One subpackage per concern, listed from the bottom layer up; a module imports
only from the layers below its own (tests/test_layers.py checks it):

- :mod:`saliency_trust.io`, ``config``, ``execution``: files, config, job settings
- :mod:`saliency_trust.storage`  on-disk formats the stages share (HDF5 map cache)
- :mod:`saliency_trust.data`     canonical dataset, geometry, synthetic benchmark, splits, adapters
- :mod:`saliency_trust.models`   architecture registry, training, U-Net and detector
- :mod:`saliency_trust.saliency` saliency methods, batched engine, baseline maps
- :mod:`saliency_trust.metrics`  per-image trust criteria (tidy long tables)
- :mod:`saliency_trust.stats`    mixed-effects models, Tukey comparisons, PASS/FAIL
- :mod:`saliency_trust.plots`    figures

``saliency`` and ``metrics`` are siblings: metrics read maps through ``storage``.
"""

__version__ = "0.1.0"
