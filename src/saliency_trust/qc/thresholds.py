"""Decision and flagging thresholds (Shu et al., INFORMER, "Quality Control Alarm" and "Implementation").

- :func:`youden_threshold`: a class's decision threshold, the sigmoid output maximizing Youden's
  ``J = sensitivity + specificity - 1`` on the validation split; a prediction is positive when ``p >= t``.
- :func:`search_tau`: the flagging threshold of one class and score, grid-searched with step 0.001 from 0 to
  the score's maximum on the validation split, maximizing F1 after the flagged predictions are flipped
  (a flagged positive becomes negative and a flagged negative positive). Where several thresholds reach the
  best F1, the one flagging the fewest validation predictions is kept, so that a score that cannot improve F1
  flags nothing (the paper does not say how it breaks ties).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from saliency_trust.qc.scores import HIGH, LOW


def youden_threshold(truth: np.ndarray, probability: np.ndarray, label: str = "") -> float:
    """The threshold of the ROC point with the largest Youden index (the first of equal ones, i.e. the highest
    threshold); both classes must be present. A point at infinity (no positive prediction is best) becomes
    the next float above the largest output."""
    from sklearn.metrics import roc_curve

    truth = np.asarray(truth).astype(int)
    if truth.min(initial=1) == truth.max(initial=0):
        raise ValueError(
            f"label '{label}': the validation split holds only {'positive' if truth.any() else 'negative'} "
            "images; a Youden threshold needs both"
        )
    fpr, tpr, thresholds = roc_curve(truth, probability)
    best = int(np.argmax(tpr - fpr))
    t = float(thresholds[best])
    return t if np.isfinite(t) else float(np.nextafter(np.max(probability), np.inf))


def flag(score: np.ndarray, tau: float, direction: str) -> np.ndarray:
    """Flagged predictions: ``score < tau`` for a low-is-uncertain score (INFORMER), ``score > tau`` for a
    high-is-uncertain one (entropy, TTA). At ``tau = 0`` a low score flags nothing (scores are >= 0)."""
    score = np.asarray(score)
    if direction == LOW:
        return score < tau
    if direction == HIGH:
        return score > tau
    raise ValueError(f"direction must be '{LOW}' or '{HIGH}', got '{direction}'")


def corrected(prediction: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """Predictions after quality control: the flagged ones flipped."""
    return np.asarray(prediction).astype(bool) ^ np.asarray(flagged).astype(bool)


def f1_from_counts(tp, fp, fn) -> np.ndarray:
    """``2 TP / (2 TP + FP + FN)``, 0 where the denominator is 0 (scikit-learn's ``zero_division=0``)."""
    tp, fp, fn = (np.asarray(v, np.float64) for v in (tp, fp, fn))
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)


def tau_grid(max_score: float, step: float = 0.001) -> np.ndarray:
    """``0, step, 2 step, ...`` up to the first point at or above ``max_score``."""
    if step <= 0:
        raise ValueError(f"qc.grid_step must be > 0, got {step}")
    top = max(float(max_score), 0.0)
    k = int(np.ceil(top / step - 1e-9))  # the tolerance: no extra point for a maximum of k * step up to rounding
    if k * step < top:  # a maximum a hair above a grid point still gets a point at or above it
        k += 1
    return step * np.arange(k + 1)


@dataclass(frozen=True)
class TauSearch:
    """The outcome of one search: the threshold, the validation F1 without and with quality control, and the
    number of validation predictions it flags."""

    tau: float
    f1_without: float
    f1_with: float
    n_flagged: int
    n_grid: int


def search_tau(
    score: np.ndarray, prediction: np.ndarray, truth: np.ndarray, direction: str, step: float = 0.001
) -> TauSearch:
    """The flagging threshold of one class (module docstring), in O(n log n + grid): the images sorted by score,
    each threshold flags a prefix (low) or a suffix (high) of them, and cumulative sums give the counts."""
    score = np.asarray(score, np.float64)
    pred, truth = np.asarray(prediction).astype(bool), np.asarray(truth).astype(bool)
    if not np.isfinite(score).all():
        raise ValueError("quality-control scores must be finite")
    grid = tau_grid(score.max(initial=0.0), step)
    order = np.argsort(score, kind="stable")
    s, p, t = score[order], pred[order], truth[order]
    # change of the confusion counts when one image's prediction is flipped
    d_tp = np.where(t, np.where(p, -1, 1), 0)
    d_fp = np.where(~t, np.where(p, -1, 1), 0)
    d_fn = -d_tp
    cum = [np.concatenate([[0], np.cumsum(d)]) for d in (d_tp, d_fp, d_fn)]
    tp0, fp0, fn0 = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
    n = len(s)
    if direction == LOW:  # flagged: the first k sorted scores, those < tau
        k = np.searchsorted(s, grid, side="left")
        deltas = [c[k] for c in cum]
        n_flagged = k
    elif direction == HIGH:  # flagged: the scores > tau, the last n - k
        k = np.searchsorted(s, grid, side="right")
        deltas = [c[n] - c[k] for c in cum]
        n_flagged = n - k
    else:
        raise ValueError(f"direction must be '{LOW}' or '{HIGH}', got '{direction}'")
    f1 = f1_from_counts(tp0 + deltas[0], fp0 + deltas[1], fn0 + deltas[2])
    best = f1.max()
    candidates = np.flatnonzero(f1 == best)
    pick = candidates[np.argmin(n_flagged[candidates])]  # fewest flags; the first such grid point
    return TauSearch(
        tau=float(grid[pick]),
        f1_without=float(f1_from_counts(tp0, fp0, fn0)),
        f1_with=float(best),
        n_flagged=int(n_flagged[pick]),
        n_grid=len(grid),
    )
