"""Writing model files: atomic and byte-identical for identical content (docs/troubleshooting.md)."""

from __future__ import annotations

import os

import torch

from saliency_trust.io import atomic_path


def save_torch(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` atomically, through a file object: the archive then has a fixed inner name (not the
    temporary file's), so identical content gives identical bytes (and the same SHA-256 in the caches)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
