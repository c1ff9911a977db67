"""Uncertainty scores of each prediction (Shu et al., INFORMER, Methodology and "Benchmarking Baselines").

- :func:`class_distinctiveness`: INFORMER's score. ``d_ij = 1 - cos(S_i, S_j)`` between the class maps of one
  image (Eq. 1), ``d_i = sum_{j != i} d_ij``. Similar class maps (low ``d_i``) mark a prediction the model is
  unsure of: a low score is flagged.
- :func:`predictive_entropy`: binary entropy of the sigmoid output in bits (Eq. 2); a high score is flagged.
- the test-time augmentation spread (:mod:`.augmentation`, settings :class:`TTASettings`): the standard deviation
  of the sigmoid output over seeded augmented copies of the image; a high score is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# which end of each score marks an uncertain prediction (flagged): INFORMER low distinctiveness, baselines high
LOW, HIGH = "low", "high"


def cosine_distance_matrices(maps: np.ndarray) -> np.ndarray:
    """``1 - cosine similarity`` between the class maps of each image: N x L x ... -> N x L x L (float64).

    A map that is all zeros has no direction: its cosine similarity to any map is taken as 0 (distance 1), as
    scikit-learn's ``cosine_similarity`` does. The diagonal is 0."""
    maps = np.asarray(maps)
    if maps.ndim < 3:
        raise ValueError(f"class maps must be N x classes x ..., got shape {maps.shape}")
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1).astype(np.float64)
    norms = np.linalg.norm(flat, axis=2, keepdims=True)
    unit = np.divide(flat, norms, out=np.zeros_like(flat), where=norms > 0)
    sim = np.clip(unit @ unit.transpose(0, 2, 1), -1.0, 1.0)
    dist = 1.0 - sim
    idx = np.arange(maps.shape[1])
    dist[:, idx, idx] = 0.0
    return dist


def class_distinctiveness(maps: np.ndarray) -> np.ndarray:
    """INFORMER's ``d_i`` (N x L): the sum over the other classes of the cosine distances of class ``i``'s map
    (Shu et al., Eq. 1 and Fig. 2). Lies in [0, 2 (L - 1)]."""
    if np.asarray(maps).shape[1] < 2:
        raise ValueError("class distinctiveness needs at least two classes (a multi-label model)")
    return cosine_distance_matrices(maps).sum(axis=2)


def predictive_entropy(probabilities: np.ndarray) -> np.ndarray:
    """``H = -p log2 p - (1 - p) log2 (1 - p)`` per prediction (Shu et al., Eq. 2), with ``0 log 0 = 0``."""
    from scipy.special import xlogy

    p = np.clip(np.asarray(probabilities, np.float64), 0.0, 1.0)
    return -(xlogy(p, p) + xlogy(1 - p, 1 - p)) / np.log(2.0) + 0.0  # + 0.0: no -0.0


@dataclass(frozen=True)
class TTASettings:
    """Test-time augmentation (config ``qc.tta``). The paper's: rotations up to 45 degrees, a 10 x 10 box blur,
    random crops with a padding of 8 (at 320 px)."""

    passes: int = 10
    rotation: float = 45.0
    blur_kernel: int = 10
    crop_padding: int = 8

    def __post_init__(self) -> None:
        if self.passes < 2:
            raise ValueError(f"qc.tta.passes must be >= 2 (a spread needs two passes), got {self.passes}")
        if self.rotation < 0 or self.blur_kernel < 0 or self.crop_padding < 0:
            raise ValueError("qc.tta: rotation, blur_kernel and crop_padding must be >= 0")
