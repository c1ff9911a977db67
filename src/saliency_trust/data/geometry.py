"""Geometry of images, masks and boxes: one module for the pixel-centre rule (docs/own-data.md).

:class:`Geometry` maps one source image of ``height x width`` pixels onto the
canonical ``size x size`` grid, either by stretching (``stretch``, as the
papers' loaders resized to 299 x 299) or by scaling the longer side and
padding the shorter one with black (``pad``, aspect ratio kept). Images are
resized with anti-aliasing (``skimage.transform.resize``, bilinear), masks by
nearest neighbour, and box and polygon coordinates scaled (and shifted) the
same way. Boxes and polygons are rasterized in canonical pixels: a pixel is
inside when its centre is (:func:`pixel_span`), the rule the ground truth, the
raters' boxes and the detector's heat maps all use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from skimage.draw import polygon2mask
from skimage.measure import label as label_components
from skimage.measure import regionprops
from skimage.transform import resize

RESIZE_MODES = ("stretch", "pad")


@dataclass(frozen=True)
class Geometry:
    """The mapping of one ``height x width`` image onto the ``size x size`` canonical grid."""

    height: int
    width: int
    size: int
    mode: str = "stretch"

    def __post_init__(self) -> None:
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got '{self.mode}'")

    @property
    def inner_shape(self) -> tuple[int, int]:
        """Shape of the resized image before padding."""
        if self.mode == "stretch":
            return self.size, self.size
        scale = self.size / max(self.height, self.width)
        return max(1, round(self.height * scale)), max(1, round(self.width * scale))

    @property
    def offset(self) -> tuple[int, int]:
        """(rows, columns) of black padding before the image."""
        h, w = self.inner_shape
        return (self.size - h) // 2, (self.size - w) // 2

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) scale factors from original to canonical pixels."""
        h, w = self.inner_shape
        return w / self.width, h / self.height

    def _place(self, inner: np.ndarray) -> np.ndarray:
        if self.mode == "stretch":
            return inner
        out = np.zeros((self.size, self.size), dtype=inner.dtype)
        (oy, ox), (h, w) = self.offset, self.inner_shape
        out[oy : oy + h, ox : ox + w] = inner
        return out

    def image(self, image: np.ndarray) -> np.ndarray:
        """Anti-aliased bilinear resize to the canonical grid, float32 in [0, 1]."""
        inner = resize(image, self.inner_shape, order=1, anti_aliasing=True, preserve_range=True, mode="reflect")
        return self._place(np.clip(inner, 0.0, 1.0).astype(np.float32))

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """Nearest-neighbour resize of a boolean mask, uint8."""
        inner = resize(mask.astype(np.uint8), self.inner_shape, order=0, anti_aliasing=False, preserve_range=True)
        return self._place((inner > 0).astype(np.uint8))

    def points(self, xy: np.ndarray) -> np.ndarray:
        """Scale N x 2 (x, y) coordinates to canonical pixels."""
        (sx, sy), (oy, ox) = self.scale, self.offset
        xy = np.asarray(xy, dtype=float)
        return np.column_stack([xy[:, 0] * sx + ox, xy[:, 1] * sy + oy])

    def box(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Scale an ``(x, y, width, height)`` box to canonical pixels."""
        x, y, w, h = box
        (sx, sy), (oy, ox) = self.scale, self.offset
        return x * sx + ox, y * sy + oy, w * sx, h * sy


def pixel_span(lo: float, hi: float, n: int) -> tuple[int, int]:
    """Pixels ``[a, b)`` (of ``n``) whose centre k + 0.5 lies in ``[lo, hi)``.

    A span holding no pixel centre gives the pixel holding its centre
    ``floor((lo + hi) / 2)``. Clipped to ``[0, n)``; ``a >= b`` means no pixel.
    """
    a, b = math.ceil(lo - 0.5), math.ceil(hi - 0.5)
    if b <= a:
        a = math.floor((lo + hi) / 2)
        b = a + 1
    return max(a, 0), min(b, n)


def boxes_mask(boxes, shape: tuple[int, int]) -> np.ndarray:
    """Union of ``(x, y, width, height)`` boxes (an iterable of 4-tuples) as an H x W boolean mask."""
    h, w = shape
    mask = np.zeros(shape, bool)
    for x, y, bw, bh in boxes:
        c0, c1 = pixel_span(float(x), float(x) + float(bw), w)
        r0, r1 = pixel_span(float(y), float(y) + float(bh), h)
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = True
    return mask


def rasterize_box(box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Pixels whose centre lies in ``[x, x + w) x [y, y + h)``; a box smaller than a pixel marks its centre pixel."""
    return boxes_mask([box], (size, size)).astype(np.uint8)


def rasterize_polygon(xy: np.ndarray, size: int) -> np.ndarray:
    """Pixels whose centre lies inside the polygon (canonical (x, y) points); at least the centroid pixel."""
    xy = np.asarray(xy, dtype=float)
    rc = np.column_stack([xy[:, 1] - 0.5, xy[:, 0] - 0.5])  # pixel centres at integer (row, col)
    mask = polygon2mask((size, size), rc).astype(np.uint8)
    if not mask.any():
        cx, cy = np.clip(np.floor(xy.mean(axis=0)).astype(int), 0, size - 1)
        mask[cy, cx] = 1
    return mask


def mask_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes ``(x, y, width, height)`` of the 8-connected components of a mask."""
    boxes = []
    for region in regionprops(label_components(mask > 0, connectivity=2)):
        r0, c0, r1, c1 = region.bbox
        boxes.append((int(c0), int(r0), int(c1 - c0), int(r1 - r0)))
    return sorted(boxes)
