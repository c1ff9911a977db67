"""On-disk formats the stages share, below the science modules: the saliency map cache (maps.py)."""
