"""Tests of the INFORMER quality-control branch (Shu et al., "INFORMER - Interpretability Founded Monitoring of
Medical Image Deep Learning Models"; docs/quality-control.md): saliency_trust.qc.scores (class distinctiveness,
predictive entropy), saliency_trust.qc.augmentation (test-time augmentation), saliency_trust.qc.thresholds
(Youden thresholds, the tau grid search), saliency_trust.qc.evaluation (F1, seeded bootstrap, paired
comparisons, Table 1 writers), saliency_trust.qc.stage (quality_control, error_auc, class maps read from a
cache) and saliency_trust.storage.maps.iter_map_blocks.

Every expected value comes from an independent reference: a case computed by hand (the arithmetic is in the
comments), a library's own implementation (scikit-learn, SciPy, torchvision/NumPy), or a mathematical property.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage, stats
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.metrics.pairwise import cosine_distances

from saliency_trust.io import CorruptFileError, stable_seed
from saliency_trust.qc.augmentation import augment, augmentation_draws, box_blur, tta_probabilities, tta_spread
from saliency_trust.qc.evaluation import (
    NO_QC,
    bootstrap_f1,
    bootstrap_weights,
    confusion_counts,
    f1_per_class,
    paired_comparisons,
    stars,
    table1,
    table1_html,
    table1_latex,
    table1_markdown,
)
from saliency_trust.qc.scores import (
    HIGH,
    LOW,
    TTASettings,
    class_distinctiveness,
    cosine_distance_matrices,
    predictive_entropy,
)
from saliency_trust.qc.stage import (
    ENTROPY,
    TTA,
    QCSettings,
    check_predictions,
    class_map_distinctiveness,
    error_auc,
    quality_control,
    run_quality_control,
)
from saliency_trust.qc.thresholds import (
    corrected,
    f1_from_counts,
    flag,
    search_tau,
    tau_grid,
    youden_threshold,
)
from saliency_trust.storage.maps import iter_map_blocks, write_maps

# ---------------------------------------------------------------- independent references


def sk_f1(truth, prediction) -> np.ndarray:
    """scikit-learn's F1 per column of N x L binary arrays (a 1-D array is one column)."""
    truth, prediction = np.asarray(truth).astype(int), np.asarray(prediction).astype(int)
    if truth.ndim == 1:
        return np.array([f1_score(truth, prediction, zero_division=0)])
    return f1_score(truth, prediction, average=None, zero_division=0)


def brute_youden(truth, probability) -> float:
    """Youden's J = TPR - FPR of ``p >= t`` at every distinct output, highest first; the first maximum wins.
    Above every output (no positive prediction) J = 0: if nothing beats 0, the threshold lies above the max."""
    truth, probability = np.asarray(truth).astype(bool), np.asarray(probability, np.float64)
    best_j, best_t = 0.0, np.inf
    for t in np.unique(probability)[::-1]:
        pred = probability >= t
        j = pred[truth].mean() - pred[~truth].mean()
        if j > best_j + 1e-12:
            best_j, best_t = j, t
    return float(best_t)


def brute_tau(score, prediction, truth, direction: str, step: float) -> tuple[float, float, int]:
    """The flagging threshold by brute force: every grid point, flags by direct comparison, F1 by scikit-learn;
    the best F1, then the fewest flags, then the first grid point. Returns (tau, F1, number flagged)."""
    score, prediction, truth = np.asarray(score), np.asarray(prediction, bool), np.asarray(truth, bool)
    rows = []
    for k, tau in enumerate(tau_grid(score.max(), step)):
        flagged = score < tau if direction == "low" else score > tau
        rows.append((sk_f1(truth, prediction ^ flagged)[0], int(flagged.sum()), k, tau))
    best = max(r[0] for r in rows)
    ties = [r for r in rows if abs(r[0] - best) < 1e-12]
    f1, n, _, tau = min(ties, key=lambda r: (r[1], r[2]))
    return tau, f1, n


def quantile_linear(x, q: float) -> float:
    """The percentile with linear interpolation between order statistics (position q (R - 1))."""
    s = np.sort(np.asarray(x, np.float64))
    h = (len(s) - 1) * q
    lo = int(np.floor(h))
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (h - lo) * (s[hi] - s[lo]))


def mann_whitney_auc(positive_scores, negative_scores) -> float:
    """P(score of a positive > score of a negative) + P(tie) / 2, over all pairs."""
    pos, neg = np.asarray(positive_scores)[:, None], np.asarray(negative_scores)[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


# ---------------------------------------------------------------- class distinctiveness (Eq. 1)


def test_distinctiveness_of_three_known_maps():
    # S0 = [1, 0], S1 = [0, 1], S2 = [-1, 0]: cos(S0, S1) = 0 -> d01 = 1; cos(S0, S2) = -1 -> d02 = 2;
    # cos(S1, S2) = 0 -> d12 = 1. d0 = 1 + 2 = 3, d1 = 1 + 1 = 2, d2 = 2 + 1 = 3.
    maps = np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    np.testing.assert_allclose(cosine_distance_matrices(maps)[0], [[0, 1, 2], [1, 0, 1], [2, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(class_distinctiveness(maps), [[3.0, 2.0, 3.0]], atol=1e-12)


def test_distinctiveness_of_scaled_and_zero_maps():
    # a map equal to another one scaled: cos = 1 -> distance 0; scaled by a negative factor: cos = -1 -> 2
    same = np.array([[[1.0, 2.0], [3.0, 6.0]], [[1.0, 2.0], [-2.0, -4.0]]])
    np.testing.assert_allclose(class_distinctiveness(same), [[0.0, 0.0], [2.0, 2.0]], atol=1e-12)
    # an all-zero map has no direction: distance 1 to every map (scikit-learn's convention), so here
    # d01 = d02 = 1 and d12 = 1 (S1 = [1, 0] and S2 = [0, 1] are orthogonal): d = [2, 2, 2]
    zero = np.array([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    np.testing.assert_allclose(class_distinctiveness(zero), [[2.0, 2.0, 2.0]], atol=1e-12)
    np.testing.assert_allclose(cosine_distance_matrices(zero)[0], cosine_distances(zero[0]), atol=1e-12)
    assert np.isfinite(class_distinctiveness(np.zeros((1, 3, 2, 2)))).all()


def test_distinctiveness_of_random_maps_matches_sklearn():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(4, 5, 2, 6, 6)).astype(np.float32)  # N x L x C x H x W, as the 'raw' attributions
    d = class_distinctiveness(raw)
    assert d.shape == (4, 5) and d.dtype == np.float64
    for n in range(4):
        flat = raw[n].reshape(5, -1).astype(np.float64)
        np.testing.assert_allclose(cosine_distance_matrices(raw)[n], cosine_distances(flat), atol=1e-10)
        np.testing.assert_allclose(d[n], cosine_distances(flat).sum(axis=1), atol=1e-10)
    assert (d >= 0).all() and (d <= 2 * (5 - 1)).all()  # each of the L - 1 distances lies in [0, 2]
    # property: the cosine ignores a map's positive scale
    scaled = raw.copy()
    scaled[:, 2] *= 7.5
    np.testing.assert_allclose(class_distinctiveness(scaled), d, atol=1e-6)


def test_distinctiveness_refuses_a_single_class_and_flat_input():
    with pytest.raises(ValueError, match="at least two classes"):
        class_distinctiveness(np.ones((3, 1, 4, 4)))
    with pytest.raises(ValueError, match="N x classes"):
        cosine_distance_matrices(np.ones((3, 4)))


# ---------------------------------------------------------------- predictive entropy (Eq. 2)


def test_predictive_entropy_matches_scipy_and_hand_values():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, size=(50, 3))
    expected = np.vectorize(lambda v: stats.entropy([v, 1 - v], base=2))(p)
    np.testing.assert_allclose(predictive_entropy(p), expected, atol=1e-12)
    # H(0.5) = -2 * 0.5 log2 0.5 = 1; H(0) = H(1) = 0 (0 log 0 = 0);
    # H(0.25) = 0.25 * 2 + 0.75 * log2(4/3) = 0.5 + 0.311278 = 0.811278
    h = predictive_entropy(np.array([0.5, 0.0, 1.0, 0.25]))
    np.testing.assert_allclose(h, [1.0, 0.0, 0.0, 0.8112781244591328], atol=1e-12)
    assert not np.signbit(h).any()  # no -0.0
    np.testing.assert_allclose(predictive_entropy(p), predictive_entropy(1 - p), atol=1e-12)  # H(p) = H(1 - p)
    assert (predictive_entropy(p) <= 1.0).all()


# ---------------------------------------------------------------- Youden threshold


def test_youden_threshold_hand_case():
    # truth [0, 0, 1, 1], p [0.1, 0.4, 0.35, 0.8]; positive when p >= t:
    #   t = 0.8:  TPR 1/2, FPR 0   -> J = 0.5
    #   t = 0.4:  TPR 1/2, FPR 1/2 -> J = 0
    #   t = 0.35: TPR 1,   FPR 1/2 -> J = 0.5
    #   t = 0.1:  TPR 1,   FPR 1   -> J = 0
    # the maximum 0.5 is reached at 0.8 and 0.35; roc_curve lists thresholds highest first: 0.8
    assert youden_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.8


def test_youden_threshold_above_every_output_when_nothing_beats_j0():
    # an anti-predictive output: truth [1, 1, 0, 0], p [0.1, 0.2, 0.3, 0.4]; J <= 0 at every output, so
    # the best point is "no positive prediction": a threshold just above 0.4, nothing is predicted positive
    p = np.array([0.1, 0.2, 0.3, 0.4])
    t = youden_threshold(np.array([1, 1, 0, 0]), p)
    assert t > 0.4 and t == np.nextafter(0.4, 1.0)
    assert not (p >= t).any()


def test_youden_threshold_matches_brute_force():
    rng = np.random.default_rng(2)
    for _ in range(20):
        n = int(rng.integers(6, 40))
        truth = rng.integers(0, 2, n)
        truth[:2] = [0, 1]
        p = np.round(np.clip(0.3 * truth + rng.uniform(0, 0.7, n), 0, 1), 2)  # rounded: ties between outputs
        assert youden_threshold(truth, p) == brute_youden(truth, p)


def test_youden_threshold_needs_both_classes_and_names_the_label():
    with pytest.raises(ValueError, match="label 'Edema'.*only negative"):
        youden_threshold(np.zeros(5), np.linspace(0, 1, 5), "Edema")
    with pytest.raises(ValueError, match="label 'Cardiomegaly'.*only positive"):
        youden_threshold(np.ones(5), np.linspace(0, 1, 5), "Cardiomegaly")


# ---------------------------------------------------------------- flagging and the tau search


def test_flag_and_corrected_hand_cases():
    score = np.array([0.0, 0.2, 0.5, 0.9])
    # low-is-uncertain: score < 0.5 -> the first two; high-is-uncertain: score > 0.5 -> the last one
    np.testing.assert_array_equal(flag(score, 0.5, LOW), [True, True, False, False])
    np.testing.assert_array_equal(flag(score, 0.5, HIGH), [False, False, False, True])
    assert not flag(score, 0.0, LOW).any()  # tau = 0 flags nothing for a non-negative score
    with pytest.raises(ValueError, match="direction"):
        flag(score, 0.5, "sideways")
    # a flagged prediction is flipped: 1 -> 0 and 0 -> 1; the others stay
    np.testing.assert_array_equal(corrected([1, 0, 1, 0], [True, True, False, False]), [False, True, True, False])


def test_f1_from_counts_matches_sklearn():
    # TP 2, FP 1, FN 1: 2*2 / (4 + 1 + 1) = 2/3; no positive anywhere: 0 (zero_division=0)
    np.testing.assert_allclose(f1_from_counts([2, 0], [1, 0], [1, 0]), [2 / 3, 0.0])
    truth, pred = np.array([1, 1, 1, 0, 0]), np.array([1, 1, 0, 1, 0])
    assert f1_from_counts(2, 1, 1) == pytest.approx(f1_score(truth, pred))


def test_tau_grid():
    for step in (0.001, 0.1, 0.05):
        for m in np.random.default_rng(3).uniform(0, 3, 20):
            grid = tau_grid(m, step)
            assert grid[0] == 0.0
            np.testing.assert_array_equal(grid, step * np.arange(len(grid)))  # exact multiples of the step
            assert grid[-1] >= m and grid[-2] < m  # up to the first point at or above the max
    # a max of exactly k * step ends at k * step: 0.3 with step 0.1 -> 0, 0.1, 0.2, 0.3
    assert len(tau_grid(0.3, 0.1)) == 4 and tau_grid(0.3, 0.1)[-1] == pytest.approx(0.3)
    assert len(tau_grid(4.0, 0.001)) == 4001 and tau_grid(4.0, 0.001)[-1] == pytest.approx(4.0)
    assert len(tau_grid(0.7, 0.1)) == 8
    np.testing.assert_array_equal(tau_grid(0.0), [0.0])
    with pytest.raises(ValueError, match="grid_step"):
        tau_grid(1.0, 0.0)


def test_tau_grid_reaches_a_max_just_above_a_grid_point():
    m = 0.5 + 1e-13
    # docstring: 'up to the first point at or above max_score', also for a max a hair above a grid point
    assert tau_grid(m, 0.1)[-1] >= m
    # else, with every prediction right and a high-is-uncertain score, the image with score m would be flagged at
    # every grid point (F1 2/3) instead of flagging nothing (F1 1)
    found = search_tau(np.array([0.1, m]), np.array([1, 0]), np.array([1, 0]), HIGH, 0.1)
    assert found.n_flagged == 0 and found.f1_with == 1.0


# six images:       0     1     2     3     4     5
HAND_SCORE = np.array([0.12, 0.27, 0.33, 0.48, 0.55, 0.71])
HAND_TRUTH = np.array([1, 0, 1, 0, 1, 0])
HAND_PRED = np.array([0, 1, 1, 0, 1, 1])  # FN, FP, TP, TN, TP, FP


def test_search_tau_low_hand_case():
    # without QC: TP 2 (2, 4), FP 2 (1, 5), FN 1 (0): F1 = 4 / (4 + 2 + 1) = 4/7.
    # grid step 0.1 up to 0.71: 0, 0.1, ..., 0.8 (9 points). Flagged: score < tau.
    #   tau 0, 0.1: none                     -> 4/7
    #   tau 0.2: {0} FN->TP: TP3 FP2 FN0     -> 6/8 = 0.75
    #   tau 0.3: {0, 1} FP->TN: TP3 FP1 FN0  -> 6/7 (best)
    #   tau 0.4: + 2 TP->FN: TP2 FP1 FN1     -> 4/6
    #   tau 0.5: + 3 TN->FP: TP2 FP2 FN1     -> 4/7
    #   tau 0.6, 0.7: + 4 TP->FN: TP1 FP2 FN2 -> 2/6
    #   tau 0.8: + 5 FP->TN: TP1 FP1 FN2     -> 2/5
    found = search_tau(HAND_SCORE, HAND_PRED, HAND_TRUTH, LOW, 0.1)
    assert found.tau == pytest.approx(0.3)
    assert found.f1_without == pytest.approx(4 / 7)
    assert found.f1_with == pytest.approx(6 / 7)
    assert found.n_flagged == 2
    assert found.n_grid == 9


def test_search_tau_high_hand_case():
    # flagged: score > tau.
    #   tau 0, 0.1: all flipped: TP1 (0) FP1 (3) FN2 (2, 4)   -> 2/5
    #   tau 0.2: {1..5}: TP0 FP1 FN3                          -> 0
    #   tau 0.3: {2..5}: TP0 FP2 FN3                          -> 0
    #   tau 0.4: {3, 4, 5}: TP1 FP2 FN2                       -> 2/6
    #   tau 0.5: {4, 5}: TP1 FP1 FN2                          -> 2/5
    #   tau 0.6, 0.7: {5} FP->TN: TP2 FP1 FN1                 -> 4/6 (best, one flag each: the first, 0.6)
    #   tau 0.8: none                                         -> 4/7
    found = search_tau(HAND_SCORE, HAND_PRED, HAND_TRUTH, HIGH, 0.1)
    assert found.tau == pytest.approx(0.6)
    assert found.f1_without == pytest.approx(4 / 7)
    assert found.f1_with == pytest.approx(2 / 3)
    assert found.n_flagged == 1


def test_search_tau_high_keeps_the_fewest_flags_among_equal_f1():
    # images: 0 TP (0.05), 1 FN (0.25), 2 TP (0.35), 3 FP (0.55); without QC TP2 FP1 FN1 -> 2/3.
    # grid 0 .. 0.6, flagged score > tau:
    #   tau 0: all: TP1 FP0 FN2 -> 1/2;  tau 0.1, 0.2: {1, 2, 3}: TP2 FP0 FN1 -> 4/5 (3 flags)
    #   tau 0.3: {2, 3}: TP1 FP0 FN2 -> 1/2;  tau 0.4, 0.5: {3}: TP2 FP0 FN1 -> 4/5 (1 flag);  tau 0.6: 2/3
    # the best 4/5 with the fewest flags: tau 0.4 (the first maximum, 0.1, would flag 3)
    found = search_tau(np.array([0.05, 0.25, 0.35, 0.55]), np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0]), HIGH, 0.1)
    assert found.tau == pytest.approx(0.4)
    assert found.f1_with == pytest.approx(0.8)
    assert found.n_flagged == 1


def test_search_tau_matches_brute_force():
    rng = np.random.default_rng(4)
    for case in range(16):
        n = int(rng.integers(4, 25))
        truth = rng.integers(0, 2, n).astype(bool)
        pred = np.where(rng.uniform(size=n) < 0.35, ~truth, truth)
        step = 0.1 if case % 2 else 0.05
        # scores on the grid itself (step * k, as the grid computes them) and off it: ties at the boundaries
        on_grid = step * rng.integers(0, 12, n)
        score = np.where(rng.uniform(size=n) < 0.5, on_grid, np.round(rng.uniform(0, 0.6, n), 3))
        for direction in (LOW, HIGH):
            found = search_tau(score, pred, truth, direction, step)
            tau, f1, n_flagged = brute_tau(score, pred, truth, direction, step)
            assert found.tau == tau, (case, direction)
            assert found.f1_with == pytest.approx(f1, abs=1e-12)
            assert found.n_flagged == n_flagged
            assert found.f1_without == pytest.approx(sk_f1(truth, pred)[0], abs=1e-12)
            assert found.f1_with >= found.f1_without - 1e-12  # flagging nothing is always on the grid


def test_search_tau_refusals_and_constant_score():
    with pytest.raises(ValueError, match="finite"):
        search_tau(np.array([0.1, np.nan]), np.array([1, 0]), np.array([1, 0]), LOW)
    with pytest.raises(ValueError, match="direction"):
        search_tau(np.array([0.1, 0.2]), np.array([1, 0]), np.array([1, 0]), "sideways")
    # a score of 0 everywhere: the grid is [0] and no direction flags anything
    for direction in (LOW, HIGH):
        found = search_tau(np.zeros(4), np.array([1, 0, 1, 0]), np.array([1, 1, 0, 0]), direction)
        assert (found.tau, found.n_flagged, found.n_grid) == (0.0, 0, 1)
        assert found.f1_with == found.f1_without == pytest.approx(0.5)  # TP1 FP1 FN1: 2/4


# ---------------------------------------------------------------- evaluation


def test_f1_per_class_and_confusion_counts_match_sklearn():
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 2, (40, 4))
    pred = rng.integers(0, 2, (40, 4))
    truth[:, 3], pred[:, 3] = 0, 0  # no positive at all: F1 0 (zero_division=0)
    np.testing.assert_allclose(f1_per_class(pred, truth), sk_f1(truth, pred), atol=1e-12)
    for j in range(4):
        assert f1_per_class(pred, truth)[j] == pytest.approx(f1_score(truth[:, j], pred[:, j], zero_division=0))
    tp, fp, fn = confusion_counts(pred, truth)
    np.testing.assert_array_equal(tp, ((pred == 1) & (truth == 1)).sum(0))
    np.testing.assert_array_equal(fp, ((pred == 1) & (truth == 0)).sum(0))
    np.testing.assert_array_equal(fn, ((pred == 0) & (truth == 1)).sum(0))


def test_bootstrap_weights_seeding():
    w = bootstrap_weights(25, 100, seed=11)
    assert w.shape == (100, 25)
    np.testing.assert_array_equal(w.sum(axis=1), 25)  # each resample draws n images with replacement
    np.testing.assert_array_equal(w, bootstrap_weights(25, 100, seed=11))  # same seed, same resamples
    np.testing.assert_array_equal(w[:30], bootstrap_weights(25, 30, seed=11))  # resample r ignores R
    np.testing.assert_array_equal(w[40:55], bootstrap_weights(25, 100, seed=11, start=40, stop=55))
    assert not np.array_equal(w, bootstrap_weights(25, 100, seed=12))
    assert len({tuple(row) for row in w}) == 100  # distinct resamples


def test_bootstrap_f1_matches_a_direct_loop():
    rng = np.random.default_rng(6)
    truth = rng.integers(0, 2, (30, 3)).astype(bool)
    preds = {"a": rng.integers(0, 2, (30, 3)).astype(bool), "b": truth ^ (rng.uniform(size=(30, 3)) < 0.2)}
    out = bootstrap_f1(preds, truth, n_resamples=20, seed=99, chunk=7)  # chunks of 7: 7 + 7 + 6
    for name, pred in preds.items():
        assert out[name].shape == (20, 3)
        for r in range(20):
            idx = np.random.default_rng([99, r]).integers(0, 30, 30)
            np.testing.assert_allclose(out[name][r], sk_f1(truth[idx], pred[idx]), atol=1e-12)
    np.testing.assert_array_equal(out["a"][:10], bootstrap_f1(preds, truth, 10, 99)["a"])  # prefix-stable


def test_stars_thresholds():
    assert [stars(p) for p in (0.0005, 0.001, 0.0011, 0.01, 0.02, 0.05, 0.0501, 0.2, np.nan)] == [
        "***",
        "***",
        "**",
        "**",
        "*",
        "*",
        "",
        "",
        "",
    ]


def test_paired_comparisons_match_scipy():
    rng = np.random.default_rng(7)
    b_ci = rng.normal(0.6, 0.02, 200)
    a_ci = b_ci + rng.normal(0.002, 0.01, 200)
    t_res = {"A": a_ci[:30], "B": b_ci[:30]}
    ci_res = {"A": a_ci, "B": b_ci}
    out = paired_comparisons(t_res, ci_res, ["A"], ["B"], confidence=0.9)
    row = out.iloc[0]
    ref = stats.ttest_rel(a_ci[:30], b_ci[:30])
    assert row["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert row["df"] == 29 and row["n_resamples_t"] == 30 and row["n_resamples_ci"] == 200
    assert row["stars"] == stars(ref.pvalue)
    assert row["mean_f1_difference"] == pytest.approx((a_ci[:30] - b_ci[:30]).mean())
    assert row["ci_low"] == pytest.approx(quantile_linear(a_ci - b_ci, 0.05))
    assert row["ci_high"] == pytest.approx(quantile_linear(a_ci - b_ci, 0.95))
    expected = "better" if row["ci_low"] > 0 else "worse" if row["ci_high"] < 0 else "no difference shown"
    assert row["conclusion"] == expected


def test_paired_comparisons_identical_better_worse():
    rng = np.random.default_rng(8)
    base = rng.normal(0.6, 0.02, 100)
    res = {
        "same": base.copy(),
        "better": base + 0.05 + rng.normal(0, 0.005, 100),
        "worse": base - 0.05 + rng.normal(0, 0.005, 100),
        "base": base,
    }
    out = paired_comparisons(res, res, ["same", "better", "worse"], ["base"]).set_index("method")
    assert list(out["baseline"]) == ["base"] * 3
    same = out.loc["same"]
    assert np.isnan(same["t"]) and np.isnan(same["p_value"]) and same["stars"] == ""
    assert (same["ci_low"], same["ci_high"]) == (0.0, 0.0)
    assert same["conclusion"] == "no difference shown"
    assert out.loc["better", "conclusion"] == "better" and out.loc["better", "stars"] == "***"
    assert out.loc["better", "t"] > 0 and out.loc["worse", "t"] < 0
    assert out.loc["worse", "conclusion"] == "worse"


# ---------------------------------------------------------------- test-time augmentation


def test_tta_settings_validation():
    assert TTASettings() == TTASettings(passes=10, rotation=45.0, blur_kernel=10, crop_padding=8)  # the paper's
    with pytest.raises(ValueError, match="passes"):
        TTASettings(passes=1)
    with pytest.raises(ValueError, match=">= 0"):
        TTASettings(crop_padding=-1)


@pytest.mark.parametrize("kernel", [2, 3, 10])
def test_box_blur_matches_scipy_uniform_filter(kernel):
    x = torch.from_numpy(np.random.default_rng(kernel).random((2, 3, 12, 13), dtype=np.float32))
    expected = ndimage.uniform_filter(x.numpy().astype(np.float64), size=(1, 1, kernel, kernel), mode="nearest")
    out = box_blur(x, kernel)
    assert out.shape == x.shape
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_box_blur_kernel_0_and_1_is_identity():
    x = torch.rand(1, 1, 5, 5)
    assert torch.equal(box_blur(x, 0), x) and torch.equal(box_blur(x, 1), x)


def test_augmentation_draws_are_seeded_and_in_range():
    s = TTASettings(passes=2000, rotation=45.0, crop_padding=8)
    angles, offsets = augmentation_draws(5, 2000, s)
    a2, o2 = augmentation_draws(5, 2000, s)
    np.testing.assert_array_equal(angles, a2)
    np.testing.assert_array_equal(offsets, o2)
    assert not np.array_equal(angles, augmentation_draws(6, 2000, s)[0])
    assert angles.shape == (2000,) and offsets.shape == (2000, 2)
    assert (np.abs(angles) <= 45.0).all()
    assert offsets.min() == 0 and offsets.max() == 16  # [0, 2 padding], both ends reached in 4000 draws
    assert np.issubdtype(offsets.dtype, np.integer)


def test_augment_crop_only():
    p = 2
    s = TTASettings(rotation=0.0, blur_kernel=0, crop_padding=p)
    image = torch.rand(1, 6, 7)
    # offset (p, p): the crop of the padded image starts where the image does: unchanged
    assert torch.equal(augment(image, 0.0, (p, p), s), image)
    # offset (0, 0): shifted p rows down and p columns right, zeros coming in
    expected = np.zeros((1, 6, 7), np.float32)
    expected[:, p:, p:] = image.numpy()[:, :-p, :-p]
    np.testing.assert_array_equal(augment(image, 0.0, (0, 0), s).numpy(), expected)


def test_augment_rotation_blur_crop_matches_numpy_scipy():
    # rotation by 90 degrees (counter-clockwise) of a square image is np.rot90; then a 3 x 3 box blur (edges
    # repeated); then the crop at (1, 3) of the image padded with 2 zeros
    s = TTASettings(rotation=45.0, blur_kernel=3, crop_padding=2)
    image = torch.from_numpy(np.random.default_rng(9).random((1, 8, 8), dtype=np.float32))
    rotated = np.rot90(image.numpy(), 1, axes=(1, 2))
    blurred = ndimage.uniform_filter(rotated.astype(np.float64), size=(1, 3, 3), mode="nearest")
    expected = np.pad(blurred, ((0, 0), (2, 2), (2, 2)))[:, 1:9, 3:11]
    np.testing.assert_allclose(augment(image, 90.0, (1, 3), s).numpy(), expected, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()


def test_tta_probabilities_shape_and_batch_independence(tiny_model):
    s = TTASettings(passes=4, rotation=30.0, blur_kernel=3, crop_padding=2)
    images = np.random.default_rng(10).random((5, 8, 8), dtype=np.float32)
    seeds = [101, 102, 103, 104, 105]
    probs = tta_probabilities(tiny_model, images, seeds, s, "cpu")
    assert probs.shape == (5, 4, 3)  # N x passes x L
    assert ((probs > 0) & (probs < 1)).all()
    # image 2 alone, or in another batch order: the same passes (atol: BLAS may round with the batch size)
    alone = tta_probabilities(tiny_model, images[2:3], [103], s, "cpu")
    np.testing.assert_allclose(alone[0], probs[2], rtol=0, atol=1e-6)
    reordered = tta_probabilities(tiny_model, images[[4, 2, 0]], [105, 103, 101], s, "cpu")
    np.testing.assert_allclose(reordered[1], probs[2], rtol=0, atol=1e-6)
    # pass k of image i is the model's sigmoid on augment(image i, angle k, offset k)
    angles, offsets = augmentation_draws(103, 4, s)
    with torch.no_grad():
        for k in range(4):
            x = augment(torch.from_numpy(images[2])[None], angles[k], offsets[k], s)
            np.testing.assert_allclose(probs[2, k], torch.sigmoid(tiny_model(x[None]))[0].numpy(), atol=1e-6)
    assert not np.allclose(probs[2, 0], probs[2, 1])  # the passes differ
    # forward passes of at most 3 copies (the memory cap): the same outputs, and the model left in eval mode
    tiny_model.train()
    capped = tta_probabilities(tiny_model, images, seeds, s, "cpu", max_batch=3)
    np.testing.assert_allclose(capped, probs, rtol=0, atol=1e-6)
    assert not tiny_model.training


def test_tta_spread_is_sample_std():
    x = np.random.default_rng(11).random((6, 10, 3))
    np.testing.assert_allclose(tta_spread(x), np.std(x, axis=1, ddof=1), atol=1e-15)
    # hand case: passes 0.2 and 0.4: mean 0.3, squared deviations 0.01 + 0.01, / (2 - 1) -> sqrt(0.02)
    assert tta_spread(np.array([[[0.2], [0.4]]]))[0, 0] == pytest.approx(np.sqrt(0.02))


# ---------------------------------------------------------------- error AUC


def test_error_auc_hand_case_and_nan():
    # class 0: scores 0.1, 0.2, 0.3, 0.4, wrong predictions at 0.1 and 0.3 (truth 1, predicted 0).
    # low-is-uncertain: a wrong one should score lower. Pairs (wrong, right): (0.1, 0.2) yes, (0.1, 0.4) yes,
    # (0.3, 0.2) no, (0.3, 0.4) yes -> 3/4. high-is-uncertain: the reverse, 1/4.
    # class 1: every prediction right -> NaN
    score = np.array([[0.1, 0.5], [0.2, 0.6], [0.3, 0.7], [0.4, 0.8]])
    pred = np.array([[0, 1], [1, 1], [0, 0], [1, 0]])
    truth = np.array([[1, 1], [1, 1], [1, 0], [1, 0]])
    low, high = error_auc(score, pred, truth, LOW), error_auc(score, pred, truth, HIGH)
    assert low[0] == pytest.approx(0.75) and high[0] == pytest.approx(0.25)
    assert np.isnan(low[1]) and np.isnan(high[1])


def test_error_auc_matches_sklearn():
    rng = np.random.default_rng(12)
    score = np.round(rng.uniform(0, 1, (50, 3)), 1)  # ties
    truth, pred = rng.integers(0, 2, (50, 3)), rng.integers(0, 2, (50, 3))
    wrong = pred != truth
    low, high = error_auc(score, pred, truth, LOW), error_auc(score, pred, truth, HIGH)
    for j in range(3):
        assert low[j] == pytest.approx(roc_auc_score(wrong[:, j], -score[:, j]))
        assert high[j] == pytest.approx(roc_auc_score(wrong[:, j], score[:, j]))
        assert high[j] == pytest.approx(mann_whitney_auc(score[wrong[:, j], j], score[~wrong[:, j], j]))
        assert low[j] + high[j] == pytest.approx(1.0)


# ---------------------------------------------------------------- quality_control end to end

LABELS = ["Atelectasis", "Cardiomegaly", "Edema"]
VARIANT = "INFORMER-IXG"
SEED = 17


def synthetic_qc(n_per_split: int = 60, seed: int = 13):
    """A predictions table (val and test, image-major as run_predictions writes it) and one INFORMER variant's
    distinctiveness, higher for confident outputs."""
    rng = np.random.default_rng(seed)
    rows, d = [], {}
    for split, prefix in (("val", "v"), ("test", "t")):
        truth = (rng.uniform(size=(n_per_split, len(LABELS))) < 0.35).astype(int)
        truth[:2] = [[0] * len(LABELS), [1] * len(LABELS)]  # both classes in each split
        logit = 1.5 * (2 * truth - 1) + rng.normal(0, 1.5, truth.shape)
        p = 1 / (1 + np.exp(-logit))
        entropy = np.vectorize(lambda v: stats.entropy([v, 1 - v], base=2))(p)
        spread = np.abs(rng.normal(0, 0.05, truth.shape)) + 0.05 * entropy
        d[split] = np.clip(2.0 + 0.4 * np.abs(logit) + rng.normal(0, 0.4, truth.shape), 0, 4)
        for i in range(n_per_split):
            for j, label in enumerate(LABELS):
                rows.append(
                    {
                        "image_id": f"{prefix}{i:03d}",
                        "split": split,
                        "label": label,
                        "truth": truth[i, j],
                        "probability": p[i, j],
                        "entropy": entropy[i, j],
                        "tta_spread": spread[i, j],
                    }
                )
    return pd.DataFrame(rows), {VARIANT: d}


QC_SETTINGS = dict(baselines=["entropy", "tta"], grid_step=0.001, resamples=30, ci_resamples=200)


@pytest.fixture(scope="module")
def qc_run():
    predictions, d = synthetic_qc()
    tables = quality_control(predictions, d, QCSettings(**QC_SETTINGS), seed=SEED)
    return predictions, d, tables


def _matrix(predictions: pd.DataFrame, split: str, column: str) -> np.ndarray:
    part = predictions[predictions["split"] == split]
    return part[column].to_numpy().reshape(-1, len(LABELS))  # image-major rows, labels in order


def test_quality_control_tables_and_columns(qc_run):
    _, _, tables = qc_run
    assert set(tables) == {"thresholds", "scores", "f1", "bootstrap", "comparisons", "table1", "meta"}
    assert list(tables["thresholds"].columns) == [
        "method",
        "label",
        "flagged_when",
        "tau",
        "grid_points",
        "youden_threshold",
        "val_f1_no_qc",
        "val_f1",
        "val_flagged",
        "n_val",
    ]
    assert list(tables["scores"].columns) == [
        "image_id",
        "split",
        "label",
        "method",
        "score",
        "truth",
        "probability",
        "prediction",
        "flagged",
        "corrected",
    ]
    assert {"method", "label", "f1", "flag_rate", "n_flagged", "n_test", "error_auc"} <= set(tables["f1"].columns)
    assert len(tables["thresholds"]) == 3 * len(LABELS)  # 3 methods x 3 classes
    assert len(tables["scores"]) == 3 * 2 * 60 * len(LABELS)  # methods x splits x images x classes
    assert (tables["meta"].iloc[0]["n_val"], tables["meta"].iloc[0]["n_test"]) == (60, 60)
    assert set(tables["bootstrap"]["resample"]) == set(range(1, 31))


def test_quality_control_no_qc_uses_youden_thresholds(qc_run):
    predictions, _, tables = qc_run
    tv, pv = _matrix(predictions, "val", "truth"), _matrix(predictions, "val", "probability")
    tt, pt = _matrix(predictions, "test", "truth"), _matrix(predictions, "test", "probability")
    youden = np.array([brute_youden(tv[:, j], pv[:, j]) for j in range(len(LABELS))])
    th = tables["thresholds"]
    for j, label in enumerate(LABELS):
        np.testing.assert_array_equal(th.loc[th["label"] == label, "youden_threshold"], youden[j])
    f1 = tables["f1"].set_index(["method", "label"])["f1"]
    expected = sk_f1(tt, pt >= youden)
    np.testing.assert_allclose([f1[(NO_QC, label)] for label in LABELS], expected, atol=1e-12)
    assert f1[(NO_QC, "mean")] == pytest.approx(expected.mean())


def test_quality_control_flags_and_f1_per_method(qc_run):
    predictions, d, tables = qc_run
    th = tables["thresholds"].set_index(["method", "label"])
    f1 = tables["f1"].set_index(["method", "label"])
    inputs = {VARIANT: None, ENTROPY: "entropy", TTA: "tta_spread"}
    for method, column in inputs.items():
        for split in ("val", "test"):
            sc = tables["scores"]
            sc = sc[(sc["method"] == method) & (sc["split"] == split)]
            score = sc["score"].to_numpy().reshape(-1, len(LABELS))
            source = d[VARIANT][split] if column is None else _matrix(predictions, split, column)
            np.testing.assert_array_equal(score, source)  # the right score, in the right order
            prob = sc["probability"].to_numpy().reshape(-1, len(LABELS))
            pred = sc["prediction"].to_numpy().reshape(-1, len(LABELS)).astype(bool)
            truth = sc["truth"].to_numpy().reshape(-1, len(LABELS))
            flagged = sc["flagged"].to_numpy().reshape(-1, len(LABELS)).astype(bool)
            fixed = sc["corrected"].to_numpy().reshape(-1, len(LABELS))
            tau = np.array([th.loc[(method, label), "tau"] for label in LABELS])
            youden = np.array([th.loc[(method, label), "youden_threshold"] for label in LABELS])
            np.testing.assert_array_equal(pred, prob >= youden)
            # INFORMER: a low distinctiveness is flagged; the baselines: a high score
            np.testing.assert_array_equal(flagged, score < tau if method == VARIANT else score > tau)
            np.testing.assert_array_equal(fixed, pred ^ flagged)
            got = sk_f1(truth, fixed)
            if split == "test":
                np.testing.assert_allclose([f1.loc[(method, lab), "f1"] for lab in LABELS], got, atol=1e-12)
                assert f1.loc[(method, "mean"), "f1"] == pytest.approx(got.mean())
                np.testing.assert_array_equal([f1.loc[(method, lab), "n_flagged"] for lab in LABELS], flagged.sum(0))
                direction = LOW if method == VARIANT else HIGH
                oriented = -score if direction == LOW else score
                wrong = pred != truth.astype(bool)
                auc = [roc_auc_score(wrong[:, j], oriented[:, j]) for j in range(len(LABELS))]
                np.testing.assert_allclose([f1.loc[(method, lab), "error_auc"] for lab in LABELS], auc)
            else:
                np.testing.assert_allclose([th.loc[(method, lab), "val_f1"] for lab in LABELS], got, atol=1e-12)
                no_qc = sk_f1(truth, pred)
                np.testing.assert_allclose([th.loc[(method, lab), "val_f1_no_qc"] for lab in LABELS], no_qc)
                np.testing.assert_array_equal([th.loc[(method, lab), "val_flagged"] for lab in LABELS], flagged.sum(0))
                assert (got >= no_qc - 1e-12).all()  # flagging nothing is on the grid
        flagged_when = {th.loc[(method, lab), "flagged_when"] for lab in LABELS}
        assert flagged_when == ({"score < tau"} if method == VARIANT else {"score > tau"})


def test_quality_control_bootstrap_and_comparisons(qc_run):
    predictions, _, tables = qc_run
    boot_seed = int(tables["meta"].iloc[0]["bootstrap_seed"])
    assert boot_seed == stable_seed(SEED, "qc_bootstrap")
    tt = _matrix(predictions, "test", "truth")
    sc = tables["scores"][tables["scores"]["split"] == "test"]
    fixed = {m: g["corrected"].to_numpy().reshape(-1, len(LABELS)) for m, g in sc.groupby("method")}
    fixed[NO_QC] = sc[sc["method"] == VARIANT]["prediction"].to_numpy().reshape(-1, len(LABELS))
    boot = tables["bootstrap"].set_index(["method", "resample", "label"])["f1"]
    n = len(tt)
    for r in range(30):
        idx = np.random.default_rng([boot_seed, r]).integers(0, n, n)
        for method, pred in fixed.items():
            expected = sk_f1(tt[idx], pred[idx])
            np.testing.assert_allclose([boot[(method, r + 1, lab)] for lab in LABELS], expected, atol=1e-12)
            assert boot[(method, r + 1, "mean")] == pytest.approx(expected.mean())
    # the paired t-test on the 30 resamples' mean F1, and the interval over 200 resamples (hand F1 formula)
    mean_t = {m: np.array([boot[(m, r, "mean")] for r in range(1, 31)]) for m in fixed}
    mean_ci = {}
    for method, pred in fixed.items():
        values = []
        for r in range(200):
            idx = np.random.default_rng([boot_seed, r]).integers(0, n, n)
            t, p = tt[idx].astype(bool), pred[idx].astype(bool)
            tp, fp, fn = (p & t).sum(0), (p & ~t).sum(0), (~p & t).sum(0)
            values.append(np.mean(np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0)))
        mean_ci[method] = np.array(values)
    comp = tables["comparisons"]
    assert list(zip(comp["method"], comp["baseline"])) == [(VARIANT, ENTROPY), (VARIANT, TTA), (VARIANT, NO_QC)]
    for _, row in comp.iterrows():
        a, b = mean_t[row["method"]], mean_t[row["baseline"]]
        if np.allclose(a - b, (a - b)[0]):
            assert np.isnan(row["p_value"])
        else:
            ref = stats.ttest_rel(a, b)
            assert row["t"] == pytest.approx(ref.statistic, rel=1e-9)
            assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
        diff = mean_ci[row["method"]] - mean_ci[row["baseline"]]
        assert row["ci_low"] == pytest.approx(quantile_linear(diff, 0.025), abs=1e-12)
        assert row["ci_high"] == pytest.approx(quantile_linear(diff, 0.975), abs=1e-12)


def test_quality_control_table1(qc_run):
    _, _, tables = qc_run
    t1 = tables["table1"]
    assert list(t1["Method"]) == [VARIANT, ENTROPY, TTA, NO_QC]
    assert list(t1.columns) == ["Method", *LABELS, "Mean F1"]
    np.testing.assert_allclose(t1["Mean F1"], t1[LABELS].mean(axis=1), atol=1e-12)
    f1 = tables["f1"].set_index(["method", "label"])["f1"]
    for _, row in t1.iterrows():
        for label in LABELS:
            assert row[label] == f1[(row["Method"], label)]


def test_quality_control_refuses_an_empty_split():
    predictions, d = synthetic_qc(n_per_split=10)
    with pytest.raises(ValueError, match="test split is empty"):
        quality_control(predictions[predictions["split"] == "val"], d, QCSettings(**QC_SETTINGS), seed=SEED)


# ---------------------------------------------------------------- class maps in the HDF5 cache


def _write_class_maps(path, ids, labels, seed=0, shape=(4, 4)):
    rng = np.random.default_rng(seed)
    maps = rng.uniform(0, 1, (len(ids), len(labels), *shape)).astype(np.float32)
    raw = rng.normal(size=(len(ids), len(labels), 2, *shape)).astype(np.float32)
    target = {"labels": labels, "output": "logit", "seed": 0, "splits": ["val", "test"]}
    write_maps(path, ids, maps, raw, "IXG", {}, "0" * 64, target)
    return maps, raw


def test_iter_map_blocks_reads_back_the_arrays(tmp_path):
    ids = [f"img{i}" for i in range(7)]
    path = tmp_path / "maps.h5"
    maps, raw = _write_class_maps(path, ids, LABELS)
    for name, array in (("map", maps), ("raw", raw)):
        blocks = list(iter_map_blocks(path, name, block=3))
        assert [len(b[0]) for b in blocks] == [3, 3, 1]
        assert sum((b[0] for b in blocks), []) == ids
        np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), array)
        assert json.loads(blocks[0][2]["target"])["labels"] == LABELS
    with pytest.raises(ValueError, match="'map' and 'raw'"):
        list(iter_map_blocks(path, "image_id"))


def test_iter_map_blocks_corrupted_raw_raises_and_removes_the_file(tmp_path):
    ids = [f"img{i}" for i in range(7)]
    path = tmp_path / "maps.h5"
    _write_class_maps(path, ids, LABELS)
    with h5py.File(path, "r+") as h5:
        h5["raw"][4, 1, 0, 2, 2] = h5["raw"][4, 1, 0, 2, 2] + 1.0
    seen = []
    with pytest.raises(CorruptFileError, match="raw"):
        for block in iter_map_blocks(path, "raw", block=3):
            seen.append(block)
    assert len(seen) == 3  # the mismatch is known after the last block
    assert not path.exists()


def test_class_map_distinctiveness_reads_in_blocks_and_reorders(tmp_path):
    ids = [f"img{i:02d}" for i in range(40)]  # more than one READ_BLOCK (32)
    path = tmp_path / "maps.h5"
    _, raw = _write_class_maps(path, ids, LABELS, seed=1)
    order = np.random.default_rng(2).permutation(40)
    d, labels = class_map_distinctiveness(path, [ids[k] for k in order], "raw")
    assert labels == LABELS
    for row, k in enumerate(order):
        flat = raw[k].reshape(len(LABELS), -1).astype(np.float64)
        np.testing.assert_allclose(d[row], cosine_distances(flat).sum(axis=1), atol=1e-9)
    with pytest.raises(ValueError, match="no class maps of image.*nope"):
        class_map_distinctiveness(path, ["img00", "nope"], "raw")


def test_class_map_distinctiveness_of_processed_maps(tmp_path):
    """qc.maps: processed reads the post-processed maps (dataset 'map') instead of the raw attributions."""
    ids = [f"img{i}" for i in range(5)]
    path = tmp_path / "maps.h5"
    maps, _ = _write_class_maps(path, ids, LABELS, seed=4)
    d, _ = class_map_distinctiveness(path, ids, "processed")
    expected = [cosine_distances(m.reshape(len(LABELS), -1).astype(np.float64)).sum(axis=1) for m in maps]
    np.testing.assert_allclose(d, expected, atol=1e-9)
    with pytest.raises(ValueError, match="qc.maps"):
        class_map_distinctiveness(path, ids, "smoothed")


def test_class_map_distinctiveness_refuses_a_file_that_is_not_class_maps(tmp_path):
    ids = [f"img{i}" for i in range(3)]
    single = tmp_path / "single.h5"  # a trust-criteria cache: one map per image, no class axis
    maps = np.random.default_rng(0).uniform(size=(3, 4, 4)).astype(np.float32)
    write_maps(single, ids, maps, maps[:, None], "IXG", {}, "0" * 64, {"label": "a", "output": "logit"})
    with pytest.raises(ValueError, match="not a class-map file"):
        class_map_distinctiveness(single, ids, "raw")
    fewer = tmp_path / "fewer.h5"
    target = {"labels": LABELS, "output": "logit"}
    write_maps(fewer, ids, np.stack([maps] * 2, 1), np.stack([maps] * 2, 1)[:, :, None], "IXG", {}, "0" * 64, target)
    with pytest.raises(ValueError, match="expected one per class"):
        class_map_distinctiveness(fewer, ids, "raw")


def _bad(edit):
    predictions, _ = synthetic_qc(n_per_split=10, seed=5)
    return edit(predictions.copy())


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda p: p.drop(columns="entropy"), r"missing column\(s\) \['entropy'\]"),
        (lambda p: pd.concat([p, p.iloc[[3]]]), "image 'v001' has two rows for label 'Atelectasis'"),
        (lambda p: p.drop(index=4), "image 'v001' lacks a row for some label"),
        (lambda p: p.assign(probability=p["probability"].where(p.index != 7)), "no probability for image 'v002'"),
        (lambda p: p[p["split"] != "val"], "no val images"),
    ],
)
def test_check_predictions_names_the_file_and_image(edit, needle):
    with pytest.raises(ValueError, match=needle) as err:
        check_predictions(_bad(edit), "qc/predictions.csv")
    assert "qc/predictions.csv" in str(err.value)


def test_run_quality_control_refuses_a_bad_table_and_writes_nothing(tmp_path):
    predictions, _ = synthetic_qc(n_per_split=10, seed=5)
    pred_path = tmp_path / "predictions.csv"
    predictions.assign(tta_spread=np.nan).to_csv(pred_path, index=False)
    ids = list(dict.fromkeys(predictions["image_id"]))
    _write_class_maps(tmp_path / "IXG.h5", ids, LABELS)
    names = ["thresholds", "scores", "f1", "bootstrap", "comparisons", "table_csv", "table_md", "table_tex"]
    outputs = {k: str(tmp_path / f"out_{k}") for k in [*names, "table_html"]}
    settings = dict(methods=["IXG"], grid_step=0.01, resamples=5, ci_resamples=100)
    with pytest.raises(ValueError, match="no TTA spread, but qc.baselines lists tta"):
        run_quality_control(pred_path, {"IXG": str(tmp_path / "IXG.h5")}, settings, SEED, "m", outputs)
    assert not any(tmp_path.glob("out_*"))
    # without the TTA baseline, an empty spread (qc_predictions skipped TTA) is fine
    run_quality_control(
        pred_path, {"IXG": str(tmp_path / "IXG.h5")}, {**settings, "baselines": ["entropy"]}, SEED, "m", outputs
    )
    assert list(pd.read_csv(outputs["table_csv"])["Method"]) == [VARIANT, ENTROPY, NO_QC]


def test_run_quality_control_writes_every_table(tmp_path):
    predictions, _ = synthetic_qc(n_per_split=20, seed=21)
    pred_path = tmp_path / "predictions.csv"
    predictions.to_csv(pred_path, index=False)
    ids = list(dict.fromkeys(predictions["image_id"]))  # val then test
    maps_path = tmp_path / "IXG.h5"
    _, raw = _write_class_maps(maps_path, ids, LABELS, seed=3)
    names = ["thresholds", "scores", "f1", "bootstrap", "comparisons"]
    outputs = {k: str(tmp_path / f"{k}.csv") for k in names}
    outputs.update(
        table_csv=str(tmp_path / "table1.csv"),
        table_md=str(tmp_path / "table1.md"),
        table_tex=str(tmp_path / "table1.tex"),
        table_html=str(tmp_path / "table1.html"),
    )
    settings = dict(methods=["IXG"], grid_step=0.01, resamples=10, ci_resamples=50, maps="raw")
    run_quality_control(pred_path, {"IXG": str(maps_path)}, settings, SEED, "simple_cnn", outputs)
    t1 = pd.read_csv(outputs["table_csv"])
    assert list(t1["Method"]) == [VARIANT, ENTROPY, TTA, NO_QC]
    scores = pd.read_csv(outputs["scores"], dtype={"image_id": str})
    informer = scores[scores["method"] == VARIANT]
    expected = np.array(
        [cosine_distances(raw[k].reshape(len(LABELS), -1).astype(np.float64)).sum(1) for k in range(40)]
    )
    np.testing.assert_allclose(informer["score"].to_numpy().reshape(40, len(LABELS)), expected, atol=1e-9)
    assert (informer["image_id"].to_numpy().reshape(40, len(LABELS))[:, 0] == ids).all()
    assert "| Method |" in open(outputs["table_md"]).read()
    assert "\\begin{tabular}" in open(outputs["table_tex"]).read()
    assert open(outputs["table_html"]).read().rstrip().endswith("</html>")
    # class maps of other labels than the predictions': refused
    _write_class_maps(maps_path, ids, ["A", "B", "C"], seed=3)
    with pytest.raises(ValueError, match="class maps of"):
        run_quality_control(pred_path, {"IXG": str(maps_path)}, settings, SEED, "simple_cnn", outputs)


# ---------------------------------------------------------------- Table 1 writers


def _small_table() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = []
    values = {"INFORMER_ixg": (0.7, 0.5), "Pred. Entropy": (0.6, 0.55), NO_QC: (0.65, np.nan)}
    for method, (x, y) in values.items():
        rows += [
            {"method": method, "label": "x", "f1": x},
            {"method": method, "label": "y", "f1": y},
            {"method": method, "label": "mean", "f1": np.nanmean([x, y])},
        ]
    table = table1(pd.DataFrame(rows), list(values), ["x", "y"], {"x": "P. Effusion"})
    comparisons = paired_comparisons(
        {"INFORMER_ixg": np.array([0.6, 0.62, 0.61]), "Pred. Entropy": np.array([0.58, 0.57, 0.6])},
        {"INFORMER_ixg": np.array([0.6, 0.62, 0.61]), "Pred. Entropy": np.array([0.58, 0.57, 0.6])},
        ["INFORMER_ixg"],
        ["Pred. Entropy"],
    )
    return table, comparisons


def test_table1_layout():
    table, _ = _small_table()
    assert list(table.columns) == ["Method", "P. Effusion", "y", "Mean F1"]
    assert list(table["Method"]) == ["INFORMER_ixg", "Pred. Entropy", NO_QC]
    # Mean F1 is the long table's 'mean' row: (0.7 + 0.5) / 2 = 0.6
    assert table.loc[0, "Mean F1"] == pytest.approx(0.6)


def test_table1_markdown():
    table, _ = _small_table()
    md = table1_markdown(table, "QC", ["p < 0.05 is *"])
    lines = md.splitlines()
    assert lines[0] == "# QC"
    assert "| Method | P. Effusion | y | Mean F1 |" in lines
    assert "|---|---|---|---|" in lines
    # best per column in bold: x 0.700 (INFORMER), y 0.550 (entropy), mean 0.650 (No QC: the 0.65 alone)
    assert "| INFORMER_ixg | **0.700** | 0.500 | 0.600 |" in lines
    assert "| Pred. Entropy | 0.600 | **0.550** | 0.575 |" in lines
    assert "| No QC | 0.650 | n/a | **0.650** |" in lines
    assert "- p < 0.05 is *" in lines


def test_table1_latex():
    table, _ = _small_table()
    tex = table1_latex(table, "QC of 5% flagged", ["a note"])
    assert "\\begin{tabular}{lccc}" in tex and "\\end{tabular}" in tex
    assert "\\textbf{0.700}" in tex and "\\textbf{0.550}" in tex
    assert "INFORMER\\_ixg" in tex  # escaped underscore
    assert "5\\%" in tex


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.counts, self.errors, self.text = [], {}, [], []

    def handle_starttag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag not in ("meta",):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_table1_html_is_a_full_page():
    table, comparisons = _small_table()
    page = table1_html(table, "QC <Table 1>", ["p < 0.05"], comparisons)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    parser = _Tags()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []  # every tag closed, in order
    assert parser.counts["table"] == 2  # Table 1 and the comparisons
    assert parser.counts["tr"] == 1 + 3 + 1 + 1  # header + 3 methods, comparisons header + 1 row
    assert "<td><b>0.700</b></td>" in page
    assert "QC &lt;Table 1&gt;" in page and "p &lt; 0.05" in page  # escaped
    text = "".join(parser.text)
    assert "Paired comparisons" in text and "Pred. Entropy" in text
    # no comparison: only Table 1
    parser = _Tags()
    parser.feed(table1_html(table, "QC", [], comparisons.iloc[0:0]))
    assert parser.counts["table"] == 1
