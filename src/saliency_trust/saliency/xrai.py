"""XRAI region attribution (Kapishnikov et al. 2019), vectorized (docs/saliency.md).

Segments (:func:`felzenszwalb_segments`) follow the reference implementation
(the PAIR ``saliency`` package, ``saliency.core.xrai``): the image is rescaled to
[-1, 1] and resized to 224 x 224 (bicubic, anti-aliased), segmented by
Felzenszwalb's algorithm at scales 50, 100, 150, 250, 500, 1200 with sigma 0.8
and min size 150, and each label image is resized back by nearest neighbour.
Segments depend only on the image, so they are computed once per image and
stored as label images (levels x H x W); :func:`segment_masks` expands them into
the reference's ordered list of masks, each dilated by a disk of radius 5, as a
sparse mask-by-pixel incidence matrix.

:func:`xrai_full` is the reference's greedy algorithm: repeatedly add the region
whose not-yet-covered pixels have the highest mean attribution, dropping regions
that would add fewer than ``min_pixel_diff`` pixels; each newly covered area
gets that gain, and what stays uncovered gets its own mean attribution.
:func:`xrai_fast` ranks regions once by their mean attribution and paints them in
that order. Instead of a Python loop over boolean masks, the regions' gains live
in arrays over a sparse mask-by-pixel incidence matrix and are updated only where
newly covered pixels fall.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from skimage.morphology import disk
from skimage.segmentation import felzenszwalb
from skimage.transform import resize

FELZENSZWALB_SCALES = (50, 100, 150, 250, 500, 1200)
FELZENSZWALB_SIGMA = 0.8
FELZENSZWALB_MIN_SIZE = 150
SEGMENT_RESIZE = (224, 224)

DILATION_RADIUS = 5
MIN_PIXEL_DIFF = 50


def segment_params() -> dict:
    """The segmentation's settings, recorded with the segments (storage.maps.write_segments)."""
    return {
        "scales": list(FELZENSZWALB_SCALES),
        "sigma": FELZENSZWALB_SIGMA,
        "min_size": FELZENSZWALB_MIN_SIZE,
        "resize": list(SEGMENT_RESIZE),
    }


def felzenszwalb_segments(image: np.ndarray) -> np.ndarray:
    """Label images (len(FELZENSZWALB_SCALES) x H x W, int32) of one H x W image."""
    image = np.asarray(image, dtype=np.float64)
    lo, hi = image.min(), image.max()
    scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    scaled = scaled * 2.0 - 1.0
    big = resize(scaled, SEGMENT_RESIZE, order=3, mode="constant", preserve_range=True, anti_aliasing=True)
    levels = []
    for scale in FELZENSZWALB_SCALES:
        seg = felzenszwalb(big, scale=scale, sigma=FELZENSZWALB_SIGMA, min_size=FELZENSZWALB_MIN_SIZE)
        back = resize(seg, image.shape, order=0, preserve_range=True, mode="constant", anti_aliasing=False)
        levels.append(back.astype(np.int32))
    return np.stack(levels)


def segment_masks(labels: np.ndarray, dilation_radius: int = DILATION_RADIUS) -> sparse.csr_matrix:
    """Sparse boolean (n_masks x H*W) matrix of the dilated masks, in the reference's order.

    Masks are level by level, and within a level one per label value from the
    level's minimum to its maximum (empty where a label vanished in resizing).
    A pixel belongs to a dilated mask when a pixel of that label lies within the
    disk footprint around it. Only label changes across the footprint add
    entries beyond a pixel's own label, so the work is one pass per footprint
    offset plus a sort of the boundary entries.
    """
    n_levels, h, w = labels.shape
    p = h * w
    offsets = np.argwhere(disk(dilation_radius)) - dilation_radius if dilation_radius else np.zeros((1, 2), int)
    r = int(np.abs(offsets).max())
    pix = np.arange(p, dtype=np.int32).reshape(h, w)
    blocks = []
    for level in labels:
        rows = (level - level.min()).astype(np.int32)
        member = np.zeros((int(rows.max()) + 1, p), bool)  # member[label, pixel]
        member[rows.ravel(), pix.ravel()] = True  # each pixel is in its own label's mask
        pad = np.pad(rows, r, constant_values=-1)
        for dy, dx in offsets:
            if dy or dx:  # only label changes across the footprint add entries
                src = pad[r + dy : r + dy + h, r + dx : r + dx + w]
                diff = (src != rows) & (src >= 0)
                member[src[diff], pix[diff]] = True
        blocks.append(sparse.csr_matrix(member))
    return sparse.vstack(blocks, format="csr")


def _column_rows(csc: sparse.csc_matrix, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask row, position in ``cols``) of every nonzero in the columns ``cols`` of ``csc``."""
    starts = csc.indptr[cols]
    lens = csc.indptr[cols + 1] - starts
    owner = np.repeat(np.arange(len(cols)), lens)
    offsets = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    return csc.indices[starts[owner] + offsets], owner


def xrai_full(
    attr: np.ndarray, masks: sparse.csr_matrix, min_pixel_diff: int = MIN_PIXEL_DIFF, area_threshold: float = 1.0
) -> np.ndarray:
    """Greedy XRAI map (H x W) from a 2-D attribution and the mask incidence matrix.

    Each region's count and sum of not-yet-covered pixels are kept up to date:
    when pixels get covered, only the regions containing them are decremented
    (one bincount over those pixels' incidence), so the whole greedy run touches
    each mask-pixel pair once instead of once per step.
    """
    h, w = attr.shape
    a = attr.astype(np.float64).ravel()
    n_masks = masks.shape[0]
    csc = masks.tocsc()
    out = np.full(a.shape, -np.inf)
    covered = np.zeros(a.shape, bool)
    n_covered = 0
    counts = np.diff(masks.indptr).astype(np.float64)
    sums = masks @ a
    alive = np.ones(n_masks, bool)
    while n_covered / a.size <= area_threshold:
        alive &= counts >= min_pixel_diff
        if not alive.any():
            break
        gain = np.where(alive, sums / np.maximum(counts, 1), -np.inf)
        best = int(np.argmax(gain))  # first maximum, as the reference's strict '>' scan
        new = masks.indices[masks.indptr[best] : masks.indptr[best + 1]]
        new = new[~covered[new]]
        out[new] = a[new].mean()
        covered[new] = True
        n_covered += len(new)
        alive[best] = False
        rows, owner = _column_rows(csc, new)
        counts -= np.bincount(rows, minlength=n_masks)
        sums -= np.bincount(rows, weights=a[new][owner], minlength=n_masks)
    if not covered.all():
        out[~covered] = a[~covered].mean()
    return out.reshape(h, w)


def xrai_fast(attr: np.ndarray, masks: sparse.csr_matrix, min_pixel_diff: int = MIN_PIXEL_DIFF) -> np.ndarray:
    """Fast XRAI: regions ranked once by mean attribution, painted in that order."""
    h, w = attr.shape
    a = attr.astype(np.float64).ravel()
    sizes = np.diff(masks.indptr)
    sums = masks @ a
    gain = np.where(sizes > 0, sums / np.maximum(sizes, 1), -np.inf)
    out = np.full(a.shape, -np.inf)
    covered = np.zeros(a.shape, bool)
    for k in np.argsort(-gain, kind="stable"):
        idx = masks.indices[masks.indptr[k] : masks.indptr[k + 1]]
        new = idx[~covered[idx]]
        if len(new) < min_pixel_diff:
            continue
        out[new] = a[new].mean()
        covered[new] = True
    if not covered.all():
        out[~covered] = a[~covered].mean()
    return out.reshape(h, w)


XRAI_ALGORITHMS = {"full": xrai_full, "fast": xrai_fast}
