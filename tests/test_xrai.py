"""XRAI against the published reference implementation (PAIR ``saliency.core.XRAI``)."""

from __future__ import annotations

import numpy as np
import pytest
import saliency.core as pair
from saliency.core import xrai as pair_xrai

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
