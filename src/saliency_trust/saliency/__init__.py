"""Saliency: the method registry, post-processing and the HDF5 cache (docs/saliency.md)."""
