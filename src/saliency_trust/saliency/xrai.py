"""XRAI region attribution (Kapishnikov et al. 2019), vectorized (docs/saliency.md).

Segments (:func:`felzenszwalb_segments`) follow the reference implementation
(the PAIR ``saliency`` package, ``saliency.core.xrai``): the image is rescaled to
[-1, 1] and resized to 224 x 224 (bicubic, anti-aliased), segmented by
Felzenszwalb's algorithm at scales 50, 100, 150, 250, 500, 1200 with sigma 0.8
and min size 150, and each label image is resized back by nearest neighbour.
Segments depend only on the image, so they are computed once per image and
stored as label images (levels x H x W); :func:`segment_masks` expands them into
the reference's ordered list of masks, each dilated by a disk of radius 5, as a
sparse mask-by-pixel incidence matrix. The expansion runs in every saliency job
(per image and model) and is built from the label images' horizontal runs, a few
milliseconds per 299-px image, so it is not stored.

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


def _footprint_rows(dilation_radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dy, dx_min, dx_max) of each row of the disk footprint: every row of a disk is one run of offsets."""
    footprint = disk(dilation_radius) if dilation_radius else np.ones((1, 1), bool)
    r = footprint.shape[0] // 2
    rows = []
    for i, row in enumerate(footprint):
        cols = np.flatnonzero(row)
        if len(cols):
            if cols[-1] - cols[0] + 1 != len(cols):  # pragma: no cover - a disk's rows are convex
                raise ValueError("footprint rows must be contiguous")
            rows.append((i - r, cols[0] - r, cols[-1] - r))
    return tuple(np.array(rows, dtype=np.int64).T)


def segment_masks(labels: np.ndarray, dilation_radius: int = DILATION_RADIUS) -> sparse.csr_matrix:
    """Sparse boolean (n_masks x H*W) matrix of the dilated masks, in the reference's order.

    Masks are level by level, and within a level one per label value from the
    level's minimum to its maximum (empty where a label vanished in resizing).
    A pixel belongs to a dilated mask when a pixel of that label lies within the
    disk footprint around it.

    The expansion works on runs, not pixels: each label image row splits into
    horizontal runs of one label; a footprint row (dy, [dx_min, dx_max]) turns a
    run [x0, x1) on image row y into the interval [x0 - dx_max, x1 - dx_min) of
    that label's mask on image row y - dy. The intervals, packed as integer keys
    (mask row, image row, start, end), are sorted (a merge of one sorted part per
    footprint row), overlapping ones on the same mask and image row are merged,
    and the merged intervals are written out as the CSR column indices, already
    in order. The cost is one sort of (runs x footprint rows) keys plus one pass
    over the nonzeros, instead of one full-image pass per footprint offset.
    """
    n_levels, h, w = labels.shape
    p = h * w
    flat = np.asarray(labels).reshape(n_levels, p).astype(np.int64)
    flat -= flat.min(axis=1, keepdims=True)
    first = np.concatenate([[0], np.cumsum(flat.max(axis=1) + 1)])  # first mask row of each level
    n_masks = int(first[-1])
    flat += first[:-1, None]  # mask row of each pixel's own label
    flat = flat.ravel()
    # horizontal runs of one label on one image row, ordered by (mask row, image row, column)
    is_start = np.ones(flat.size, bool)
    np.not_equal(flat[1:], flat[:-1], out=is_start[1:])
    is_start[::w] = True
    starts = np.flatnonzero(is_start)
    ends = np.append(starts[1:], flat.size)
    lab = flat[starts]
    order = np.argsort(lab, kind="stable")
    starts, ends, lab = starts[order], ends[order], lab[order]
    line = starts // w  # level * h + image row
    y = line - line // h * h
    x0 = starts - line * w
    x1 = ends - line * w
    # one interval per run and footprint row, packed as (mask row, image row, start, end) in an int64 key
    bits = int(w).bit_length()
    if int(n_masks * h).bit_length() + 2 * bits > 63:
        raise ValueError(f"{n_masks} masks of {h} x {w} pixels are too many for segment_masks")
    low = (1 << bits) - 1
    dy, dx_min, dx_max = _footprint_rows(dilation_radius)
    yy = y - dy[:, None]
    inside = (yy >= 0) & (yy < h)
    key = lab * h + yy
    key <<= bits
    key |= np.maximum(x0 - dx_max[:, None], 0)
    key <<= bits
    key |= np.minimum(x1 - dx_min[:, None], w)
    key = key[inside]  # footprint row by footprint row, each part already sorted
    key.sort(kind="stable")  # a merge of the sorted parts
    # merge overlapping intervals of the same mask row and image row
    head = key >> bits  # (mask row, image row, start)
    reach = np.maximum.accumulate((head >> bits << bits) | (key & low))  # (mask row, image row, furthest end)
    new = np.empty(key.size, bool)
    new[:1] = True
    np.greater(head[1:], reach[:-1], out=new[1:])  # another mask or image row, or a gap
    seg = np.flatnonzero(new)
    head = head[seg]
    a = head & low
    length = (reach[np.append(seg[1:], key.size) - 1] & low) - a
    mask_row, pix_row = np.divmod(head >> bits, h)
    cum = np.cumsum(length)
    nnz = int(cum[-1]) if len(cum) else 0
    idx_dtype = np.int32 if max(nnz, p) < 2**31 else np.int64
    # column indices: +1 within an interval, a jump at the start of each
    first_pix = pix_row * w + a
    indices = np.ones(nnz, idx_dtype)
    indices[cum[:-1]] = first_pix[1:] - (first_pix[:-1] + length[:-1] - 1)
    indices[:1] = first_pix[:1]
    np.cumsum(indices, out=indices)
    indptr = np.concatenate([[0], cum])[np.searchsorted(mask_row, np.arange(n_masks + 1))].astype(idx_dtype)
    return sparse.csr_matrix((np.ones(nnz, bool), indices, indptr), shape=(n_masks, p))


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


def run_segments(manifest_path, images_path, target_label: str | None, out_path) -> None:
    """Stage entry: XRAI Felzenszwalb segments of every explained image, once per dataset, computed and written
    one image at a time (the job imports neither torch nor Captum)."""
    import logging

    from saliency_trust.data.canonical import explained_images, load_dataset
    from saliency_trust.io import Progress
    from saliency_trust.storage.maps import write_segments

    data = load_dataset(manifest_path, images_path)
    ids, images = explained_images(data, target_label or data.label_names[0])
    progress = Progress("XRAI segments", len(ids), logger=logging.getLogger(__name__))

    def labels():
        for k in range(len(ids)):
            yield felzenszwalb_segments(np.asarray(images[k : k + 1])[0])
            progress.update(k + 1)

    write_segments(out_path, ids, labels(), segment_params())
