"""XRAI against the published reference implementation (PAIR ``saliency.core.XRAI``)."""

from __future__ import annotations

import numpy as np
import pytest
import saliency.core as pair
from saliency.core import xrai as pair_xrai
from scipy import sparse
from skimage.morphology import disk

from saliency_trust.data.synthetic import SyntheticSpec, generate_image
from saliency_trust.saliency.xrai import felzenszwalb_segments, segment_masks, xrai_fast, xrai_full


def _image(k: int, size: int = 64) -> np.ndarray:
    return generate_image(SyntheticSpec(image_size=size), seed=3, index=k).image


def _reference_masks(masks, shape=(64, 64)) -> list[np.ndarray]:
    """Our sparse incidence matrix as the reference's list of boolean H x W masks."""
    return [np.asarray(masks[i].todense()).reshape(shape).astype(bool) for i in range(masks.shape[0])]


@pytest.mark.parametrize("k", [0, 1, 2])
def test_segments_equal_the_reference_felzenszwalb_masks(k):
    image = _image(k)
    ours = _reference_masks(segment_masks(felzenszwalb_segments(image)))
    ref = pair_xrai._get_segments_felzenszwalb(image)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a, b)


def _attributions(image: np.ndarray, kind: int) -> np.ndarray:
    rng = np.random.default_rng(kind)
    if kind == 0:  # smooth blob plus noise: region gains well separated
        yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
        return np.exp(-((yy - 20) ** 2 + (xx - 40) ** 2) / 80.0) + 0.1 * rng.standard_normal(image.shape)
    if kind == 1:  # image-correlated attribution
        return image * rng.standard_normal(image.shape)
    return rng.standard_normal(image.shape)  # pure noise: many near-ties


@pytest.mark.parametrize("algorithm", ["full", "fast"])
@pytest.mark.parametrize("k,kind", [(0, 0), (1, 1), (2, 2), (3, 0), (4, 1)])
def test_xrai_map_equals_the_reference_given_the_same_segments_and_attributions(algorithm, k, kind):
    image = _image(k)
    attr = _attributions(image, kind)
    masks = segment_masks(felzenszwalb_segments(image))
    ours = (xrai_full if algorithm == "full" else xrai_fast)(attr, masks)
    ref = pair.XRAI().GetMask(
        image[..., None],
        call_model_function=None,  # unused: the attribution is given
        segments=_reference_masks(masks),
        base_attribution=attr[..., None],
        extra_parameters=pair.XRAIParameters(algorithm=algorithm),
    )
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)


def test_xrai_full_with_an_area_threshold_matches_the_reference():
    image = _image(5)
    attr = _attributions(image, 0)
    masks = segment_masks(felzenszwalb_segments(image))
    ours = xrai_full(attr, masks, area_threshold=0.3)
    ref, _ = pair.XRAI._xrai(attr, _reference_masks(masks), area_perc_th=0.3, min_pixel_diff=50, integer_segments=True)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)


def test_xrai_on_a_non_square_image_and_a_constant_image():
    image = np.random.default_rng(0).random((40, 56))
    masks = segment_masks(felzenszwalb_segments(image))
    assert masks.shape[1] == 40 * 56
    attr = np.random.default_rng(1).standard_normal(image.shape)
    ref = pair.XRAI().GetMask(
        image[..., None], None, segments=_reference_masks(masks, image.shape), base_attribution=attr[..., None]
    )
    np.testing.assert_allclose(xrai_full(attr, masks), ref, rtol=1e-9, atol=1e-12)
    flat = felzenszwalb_segments(np.full((32, 32), 0.5))  # no division by zero: one segment per level
    assert np.isfinite(xrai_full(np.ones((32, 32)), segment_masks(flat))).all()


def _segment_masks_before(labels: np.ndarray, dilation_radius: int = 5) -> sparse.csr_matrix:
    """segment_masks as it was before the run-based expansion (issue 17): one pass per footprint offset."""
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


def _assert_same_csr(ours: sparse.csr_matrix, before: sparse.csr_matrix) -> None:
    assert ours.shape == before.shape
    assert ours.dtype == before.dtype == bool
    assert ours.has_sorted_indices
    assert ours.indptr.dtype == before.indptr.dtype and ours.indices.dtype == before.indices.dtype
    np.testing.assert_array_equal(ours.indptr, before.indptr)
    np.testing.assert_array_equal(ours.indices, before.indices)
    np.testing.assert_array_equal(ours.data, before.data)


@pytest.mark.parametrize("radius", [0, 1, 3, 5])
@pytest.mark.parametrize("shape", [(3, 1, 1), (2, 1, 9), (2, 9, 1), (4, 17, 23), (3, 40, 31), (2, 64, 64)])
@pytest.mark.parametrize("n_labels", [1, 3, 12])
def test_segment_masks_equal_the_per_offset_expansion_on_random_labels(radius, shape, n_labels):
    rng = np.random.default_rng([radius, *shape, n_labels])
    labels = rng.integers(-4, n_labels - 4, size=shape).astype(np.int32)
    labels[0] = rng.integers(0, 2 * n_labels, size=shape[1:])  # gaps: empty masks in the level's range
    if shape[0] > 2:
        labels[1] = np.repeat(rng.integers(5, 5 + n_labels, size=(shape[1], 1)), shape[2], axis=1)  # whole rows
    _assert_same_csr(segment_masks(labels, radius), _segment_masks_before(labels, radius))


@pytest.mark.parametrize("shape", [(64, 64), (224, 224), (299, 299), (40, 56), (299, 150), (97, 320)])
def test_segment_masks_equal_the_per_offset_expansion_on_felzenszwalb_segments(shape):
    if shape[0] == shape[1]:
        image = _image(shape[0] % 7, shape[0])
    else:
        image = np.random.default_rng(shape[0]).random(shape)
    labels = felzenszwalb_segments(image)
    for radius in (0, 5):
        _assert_same_csr(segment_masks(labels, radius), _segment_masks_before(labels, radius))
    assert segment_masks(labels, 0).sum() == labels.shape[0] * image.size  # undilated: a partition per level


def test_xrai_maps_unchanged_by_the_run_based_expansion():
    image = _image(6, 299)
    labels = felzenszwalb_segments(image)
    attr = _attributions(image, 1)
    ours, before = segment_masks(labels), _segment_masks_before(labels)
    for algorithm in (xrai_full, xrai_fast):
        np.testing.assert_array_equal(algorithm(attr, ours), algorithm(attr, before))
