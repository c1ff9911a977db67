"""Synthetic radiograph benchmark (docs/own-data.md): the shipped default dataset.

Each image is generated from its own random stream ``default_rng([seed, index])``,
so image ``k`` is the same whatever the total number of images: growing the
dataset adds images and changes none of the existing ones. ``test_images``
adds images to the test split only (ids ``syntest000000`` ..., streams of their
own): new test images without new training images (docs/new-data.md).

An image is a chest-like radiograph: a bright body, two darker lung fields with
rib shadows, a mediastinum band, smooth low-frequency texture and white noise.
Abnormal images carry lesions placed inside the lungs, of two kinds:

- ``nodule``: a small round blob with a smooth dome profile;
- ``opacity``: a larger irregular patch with a ragged border and diffuse texture.

Lesion contrast is drawn from a range whose low end is near the noise level, so a
classifier cannot separate the classes perfectly (AUC about 0.85-0.95). Every
lesion's exact pixel mask and bounding box are recorded.

Single-label mode (default) has one label, ``abnormal``; a positive image carries
one or two lesions of random kinds. Multi-label mode has one label per lesion
kind, each present independently. The optional *planted shortcut* draws a small
bright marker in the top-left corner (outside the lungs) with a probability that
depends on the label, so a classifier can cheat and the criteria can be checked
on a case where the right answer is known. ``generate_image(..., marker=True/False)``
regenerates an image with the marker forced on or off and nothing else changed
(the shortcut check's counterfactuals); ``marker_box`` records where it is.

Simulated raters (``raters`` > 0, off by default) give the human reference of
Arun et al. ("each rater against the consensus of the others";
:mod:`saliency_trust.metrics.raters`). Rater ``r`` redraws every lesion box:
each of the four sides moves independently by a uniform amount in
``[-rater_jitter, +rater_jitter]`` times the box's width (left and right sides)
or height (top and bottom sides), the new sides are rounded to whole pixels
(half away from zero), clipped to the image, and a box keeps at least one pixel
per side. The draws come from a stream of their own,
``default_rng([seed, index, RATER_STREAM, r])``, so turning raters on changes no
image, mask or ``truth`` box, and rater ``r``'s boxes do not depend on how many
raters there are. ``boxes.csv`` then holds, besides the ``truth`` rows, one row
per lesion and rater with ``rater`` = ``"1"`` ... ``"n"``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

log = logging.getLogger(__name__)
LESION_KINDS = ("nodule", "opacity")
RATER_STREAM = 0x52415445  # "RATE": third seed word of the simulated raters' random streams
# synthetic.test_images: images of the test split only, ids syntest000000..., random streams from this index on
TEST_ONLY_PREFIX = "syntest"
TEST_ONLY_STREAM = 1 << 40


@dataclass(frozen=True)
class ShortcutSpec:
    """Planted confounder: marker probability for positive and negative images."""

    enabled: bool = False
    p_positive: float = 0.9
    p_negative: float = 0.1


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the synthetic benchmark (config key ``datasets.<name>.synthetic``)."""

    n_images: int = 1000
    test_images: int = 0
    image_size: int = 64
    prevalence: float = 0.5
    multi_label: bool = False
    lesion_kinds: tuple[str, ...] = LESION_KINDS
    contrast_min: float = 0.06
    contrast_max: float = 0.22
    noise_std: float = 0.05
    shortcut: ShortcutSpec = field(default_factory=ShortcutSpec)
    raters: int = 0
    rater_jitter: float = 0.15

    def __post_init__(self) -> None:
        unknown = set(self.lesion_kinds) - set(LESION_KINDS)
        if unknown:
            raise ValueError(f"synthetic.lesion_kinds: unknown kinds {sorted(unknown)}; allowed {LESION_KINDS}")
        if self.image_size < 16:
            raise ValueError(f"synthetic.image_size must be >= 16, got {self.image_size}")
        if not 0 < self.prevalence < 1:
            raise ValueError(f"synthetic.prevalence must lie in (0, 1), got {self.prevalence}")
        if isinstance(self.raters, bool) or not isinstance(self.raters, (int, np.integer)) or self.raters < 0:
            raise ValueError(f"synthetic.raters must be an integer >= 0, got {self.raters!r}")
        if not 0 <= self.rater_jitter <= 0.5:
            raise ValueError(f"synthetic.rater_jitter must lie in [0, 0.5], got {self.rater_jitter}")

    @property
    def label_names(self) -> list[str]:
        return list(self.lesion_kinds) if self.multi_label else ["abnormal"]

    @classmethod
    def from_config(cls, cfg: dict) -> SyntheticSpec:
        cfg = dict(cfg)
        shortcut = ShortcutSpec(**cfg.pop("shortcut", {}))
        if "lesion_kinds" in cfg:
            cfg["lesion_kinds"] = tuple(cfg["lesion_kinds"])
        return cls(shortcut=shortcut, **cfg)


@dataclass
class SyntheticImage:
    image: np.ndarray  # H x W float32 in [0, 1]
    masks: np.ndarray  # L x H x W uint8
    labels: np.ndarray  # L int
    boxes: list[tuple[str, int, int, int, int]]  # (label, x, y, width, height)
    shortcut_marker: bool
    lung_mask: np.ndarray  # H x W bool
    rater_boxes: list[tuple[str, str, int, int, int, int]] = field(default_factory=list)  # (rater, label, x, y, w, h)
    marker_box: tuple[int, int, int, int] | None = None  # (x, y, width, height) of the drawn marker, else None


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field_ = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="reflect")
    return field_ / (field_.std() + 1e-12)


def _anatomy(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Background radiograph and the boolean lung mask."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    y = 2 * yy / (size - 1) - 1
    x = 2 * xx / (size - 1) - 1
    scale = rng.uniform(0.9, 1.05)
    dx, dy = rng.uniform(-0.05, 0.05, size=2)
    # Body: a bright soft-edged ellipse.
    body_r = ((x - dx) / (0.95 * scale)) ** 2 + ((y - dy) / (1.1 * scale)) ** 2
    img = 0.12 + 0.45 / (1 + np.exp((body_r - 1) * 12))
    lungs = np.zeros((size, size), bool)
    for side in (-1, 1):
        cx = dx + side * rng.uniform(0.36, 0.44) * scale
        cy = dy + rng.uniform(-0.12, -0.02)
        rx, ry = rng.uniform(0.24, 0.3) * scale, rng.uniform(0.5, 0.6) * scale
        r = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
        soft = 1 / (1 + np.exp((r - 1) * 10))
        img -= 0.25 * soft
        lungs |= r < 1.0
    # Ribs: thin bright curved bands across the lungs.
    freq, phase = rng.uniform(3.5, 4.5), rng.uniform(0, 2 * np.pi)
    ribs = (0.5 * (1 + np.cos(2 * np.pi * freq * (y + 0.35 * x**2) + phase))) ** 6
    img += 0.08 * ribs * (img < 0.45)
    # Mediastinum / spine: a bright vertical band.
    img += 0.12 * np.exp(-(((x - dx) / 0.1) ** 2))
    img += 0.03 * _smooth_noise(rng, size, size / 12)
    return img, lungs


def _disk_in_lungs(rng: np.random.Generator, lungs: np.ndarray, margin: float) -> tuple[int, int]:
    """A random lung pixel at least ``margin`` pixels (Euclidean) from the lung border, if any."""
    ys, xs = np.nonzero(ndimage.distance_transform_edt(lungs) > margin)
    if len(ys) == 0:
        ys, xs = np.nonzero(lungs)
    k = rng.integers(len(ys))
    return int(ys[k]), int(xs[k])


def _lesion(rng: np.random.Generator, kind: str, lungs: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (intensity profile in [0, 1], boolean mask) of one lesion."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    if kind == "nodule":
        r = rng.uniform(0.045, 0.08) * size
        cy, cx = _disk_in_lungs(rng, lungs, r)
        d2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2
        mask = d2 <= 1.0
        profile = np.clip(1 - d2, 0, 1) ** 0.5
    else:  # opacity
        ry, rx = rng.uniform(0.09, 0.15, size=2) * size
        cy, cx = _disk_in_lungs(rng, lungs, min(ry, rx) * 0.6)
        theta = rng.uniform(0, np.pi)
        c, s = np.cos(theta), np.sin(theta)
        u = ((xx - cx) * c + (yy - cy) * s) / rx
        v = (-(xx - cx) * s + (yy - cy) * c) / ry
        ragged = u**2 + v**2 + 0.35 * _smooth_noise(rng, size, size / 20)
        mask = ragged < 1.0
        mask = ndimage.binary_opening(mask) if mask.sum() > 8 else mask
        texture = 0.7 + 0.3 * _smooth_noise(rng, size, 1.5).clip(-1, 1)
        profile = ndimage.gaussian_filter(mask.astype(float), 1.0) * texture
    mask &= lungs  # lesions lie inside the lungs: clip what reaches past the lung border
    profile = profile * mask
    if not mask.any():  # degenerate draw: fall back to the centre pixel
        mask[int(cy), int(cx)] = True
        profile = mask.astype(float)
    return profile / max(profile.max(), 1e-12), mask


def _draw_marker(img: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A small bright 'R'-like marker in the top-left corner (outside the lungs); returns its box (x, y, w, h)."""
    size = img.shape[0]
    m = max(3, size // 12)
    y0, x0 = int(rng.integers(1, max(2, size // 16))), int(rng.integers(1, max(2, size // 16)))
    patch = np.zeros((m, m))
    patch[:, 0] = 1
    patch[0, :] = 1
    patch[m // 2, :] = 1
    patch[: m // 2 + 1, -1] = 1
    idx = np.arange(m)
    patch[m // 2 + idx[: m - m // 2], np.minimum(m // 2 + idx[: m - m // 2], m - 1)] = 1
    img[y0 : y0 + m, x0 : x0 + m] = np.maximum(img[y0 : y0 + m, x0 : x0 + m], 0.95 * patch)
    return x0, y0, m, m


def _round_half_up(v: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, halves away from zero (unlike numpy's round-half-to-even)."""
    return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(int)


def jitter_box(box: tuple[int, int, int, int], offsets: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """A rater's version of box ``(x, y, width, height)``.

    ``offsets`` = (left, top, right, bottom) side moves as fractions of the box
    size (left/right times the width, top/bottom times the height). The moved
    sides are rounded half away from zero, clipped to ``[0, size]`` and forced
    to enclose at least one pixel.
    """
    x, y, w, h = box
    x0, y0, x1, y1 = _round_half_up(
        np.array([x + offsets[0] * w, y + offsets[1] * h, x + w + offsets[2] * w, y + h + offsets[3] * h])
    )
    x0, x1 = np.clip([x0, x1], 0, size)
    y0, y1 = np.clip([y0, y1], 0, size)
    if x1 <= x0:  # degenerate: keep one pixel column inside the image
        x0 = min(x0, size - 1)
        x1 = x0 + 1
    if y1 <= y0:
        y0 = min(y0, size - 1)
        y1 = y0 + 1
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


def simulate_raters(
    boxes: list[tuple[str, int, int, int, int]], n_raters: int, jitter: float, size: int, seed: int, index: int
) -> list[tuple[str, str, int, int, int, int]]:
    """Boxes of ``n_raters`` simulated raters: (rater, label, x, y, width, height), rater-major order."""
    out = []
    for r in range(1, n_raters + 1):
        rng = np.random.default_rng([seed, index, RATER_STREAM, r])
        for label, x, y, w, h in boxes:
            offsets = rng.uniform(-jitter, jitter, size=4)
            out.append((str(r), label, *jitter_box((x, y, w, h), offsets, size)))
    return out


def generate_image(spec: SyntheticSpec, seed: int, index: int, marker: bool | None = None) -> SyntheticImage:
    """Generate image ``index`` of the benchmark (independent of ``spec.n_images``).

    ``marker`` True/False forces the shortcut marker on/off, whatever the label and the shortcut setting, and
    changes nothing else (the counterfactual images of :mod:`saliency_trust.metrics.shortcut`): the marker is
    the last random draw of an image, and a forced marker sits where the drawn one would (same stream).
    None (default) draws it as configured.
    """
    rng = np.random.default_rng([seed, index])
    size = spec.image_size
    img, lungs = _anatomy(rng, size)
    labels_ = spec.label_names
    masks = np.zeros((len(labels_), size, size), np.uint8)
    labels = np.zeros(len(labels_), int)
    boxes: list[tuple[str, int, int, int, int]] = []
    if spec.multi_label:
        kinds = [k for k in spec.lesion_kinds if rng.random() < spec.prevalence]
    else:
        n = (1 + int(rng.random() < 0.3)) if rng.random() < spec.prevalence else 0
        kinds = [str(rng.choice(spec.lesion_kinds)) for _ in range(n)]
    for kind in kinds:
        profile, mask = _lesion(rng, kind, lungs, size)
        contrast = rng.uniform(spec.contrast_min, spec.contrast_max)
        img = img + contrast * profile
        li = labels_.index(kind) if spec.multi_label else 0
        masks[li] |= mask.astype(np.uint8)
        labels[li] = 1
        ys, xs = np.nonzero(mask)
        boxes.append(
            (labels_[li], int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
        )
    img = img + spec.noise_std * rng.standard_normal((size, size))
    positive = bool(labels.any())
    drawn = False
    if spec.shortcut.enabled:
        p = spec.shortcut.p_positive if positive else spec.shortcut.p_negative
        drawn = bool(rng.random() < p)
    drawn = drawn if marker is None else bool(marker)
    marker_box = _draw_marker(img, rng) if drawn else None
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    raters = simulate_raters(boxes, spec.raters, spec.rater_jitter, size, seed, index) if spec.raters else []
    return SyntheticImage(img, masks, labels, boxes, drawn, lungs, raters, marker_box)


def test_only(image_ids) -> np.ndarray:
    """Which images are of ``synthetic.test_images``: they go to the test split whatever their hash."""
    return np.array([str(i).startswith(TEST_ONLY_PREFIX) for i in image_ids], dtype=bool)


def generate_items(spec: SyntheticSpec, seed: int):
    """Yield the benchmark image by image: (manifest row without split, image, masks, box rows); the
    ``test_images`` come after the ``n_images`` (:func:`test_only`). Memory holds one image."""
    from saliency_trust.io import Progress

    progress = Progress("synthetic benchmark", spec.n_images + spec.test_images, logger=log)
    entries = [(f"syn{i:06d}", i) for i in range(spec.n_images)]
    entries += [(f"{TEST_ONLY_PREFIX}{i:06d}", TEST_ONLY_STREAM + i) for i in range(spec.test_images)]
    for done, (image_id, index) in enumerate(entries, start=1):
        item = generate_image(spec, seed, index)
        progress.update(done)
        row = {"image_id": image_id}
        row.update({name: int(v) for name, v in zip(spec.label_names, item.labels)})
        row["has_mask"] = int(item.labels.any())
        row["shortcut_marker"] = int(item.shortcut_marker)
        box_rows = [
            {"image_id": image_id, "label": label, "rater": "truth", "x": x, "y": y, "width": w, "height": h}
            for label, x, y, w, h in item.boxes
        ]
        box_rows += [
            {"image_id": image_id, "label": label, "rater": rater, "x": x, "y": y, "width": w, "height": h}
            for rater, label, x, y, w, h in item.rater_boxes
        ]
        yield row, item.image, item.masks, box_rows


def generate_dataset(spec: SyntheticSpec, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, pd.DataFrame]:
    """The whole benchmark in memory: (manifest without split, images, masks, boxes) (:func:`generate_items`)."""
    rows, images, masks, box_rows = [], [], [], []
    for row, image, mask, boxes in generate_items(spec, seed):
        rows.append(row)
        images.append(image)
        masks.append(mask)
        box_rows += boxes
    boxes = pd.DataFrame(box_rows, columns=["image_id", "label", "rater", "x", "y", "width", "height"])
    return pd.DataFrame(rows), np.stack(images), np.stack(masks), boxes
