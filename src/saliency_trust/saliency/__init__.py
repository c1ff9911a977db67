"""Saliency: the method registry (SPEC 5), post-processing and the HDF5 cache (SPEC 5.1)."""
