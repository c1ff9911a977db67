"""The evaluation entry point of the quality-control branch (INFORMER; docs/quality-control.md).

:func:`run_quality_control` reads the predictions table and the class maps written by :mod:`.inference` and
writes Youden thresholds, INFORMER's class distinctiveness, the flagging thresholds searched on validation, test
F1, bootstrap resamples, paired tests and the Table 1 layout. Class maps are read a block at a time.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from saliency_trust.io import stable_seed, write_csv, write_text
from saliency_trust.qc import QC_SPLITS
from saliency_trust.qc.evaluation import (
    NO_QC,
    bootstrap_f1,
    f1_per_class,
    paired_comparisons,
    table1,
    table1_html,
    table1_latex,
    table1_markdown,
)
from saliency_trust.qc.scores import HIGH, LOW, TTASettings, class_distinctiveness
from saliency_trust.qc.thresholds import corrected, flag, search_tau, youden_threshold

log = logging.getLogger(__name__)
ENTROPY, TTA = "Pred. Entropy", "TTA"
# config qc.baselines -> (method name in the tables, column of the predictions table)
BASELINES = {"entropy": (ENTROPY, "entropy"), "tta": (TTA, "tta_spread")}
READ_BLOCK = 32  # class maps read per block


def informer_name(method: str) -> str:
    """``INFORMER-IXG`` for the saliency method ``IXG`` (the paper's INFORMER_ixg)."""
    return f"INFORMER-{method}"


MAP_DATASETS = {"raw": "raw", "processed": "map"}  # config qc.maps -> dataset of the cache file


def class_map_distinctiveness(path, image_ids: list[str], kind: str = "raw") -> tuple[np.ndarray, list[str]]:
    """INFORMER's d (N x L) of the class maps in a cache file (``kind``: the ``raw`` attributions or the
    ``processed`` maps), in the order of ``image_ids``, read a block at a time; and the file's class names."""
    from saliency_trust.storage.maps import iter_map_blocks

    if kind not in MAP_DATASETS:
        raise ValueError(f"qc.maps must be one of {sorted(MAP_DATASETS)}, got '{kind}'")
    d, stored_ids, labels = [], [], None
    for ids, block, attrs in iter_map_blocks(path, MAP_DATASETS[kind], READ_BLOCK):
        if labels is None:
            labels = (json.loads(attrs.get("target", "{}")) or {}).get("labels")
            if not labels:
                raise ValueError(f"{path}: not a class-map file of the quality-control branch (no target labels)")
        if block.ndim < 4 or block.shape[1] != len(labels):
            raise ValueError(f"{path}: maps of shape {block.shape[1:]}, expected one per class of {labels}")
        stored_ids += ids
        d.append(class_distinctiveness(block))
    values = np.concatenate(d) if d else np.zeros((0, len(labels or [])))
    position = {i: k for k, i in enumerate(stored_ids)}
    missing = [i for i in image_ids if i not in position]
    if missing:
        raise ValueError(f"{path}: no class maps of image(s) {missing[:5]}; it was written for other images")
    return values[[position[i] for i in image_ids]], labels or []


PREDICTION_COLUMNS = ("image_id", "split", "label", "truth", "probability", "entropy", "tta_spread")


def check_predictions(predictions: pd.DataFrame, path) -> None:
    """The predictions table has its columns, one row per image and class, no missing value where it is used
    (``tta_spread`` may be empty when TTA is not a baseline) and both splits; else a ValueError naming the file."""
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    labels = predictions["label"].unique()
    duplicated = predictions.duplicated(["image_id", "label"])
    if duplicated.any():
        row = predictions[duplicated].iloc[0]
        raise ValueError(f"{path}: image '{row.image_id}' has two rows for label '{row.label}'")
    counts = predictions.groupby("image_id")["label"].nunique()
    if (counts != len(labels)).any():
        raise ValueError(f"{path}: image '{counts.index[counts != len(labels)][0]}' lacks a row for some label")
    for column in ("split", "truth", "probability", "entropy"):
        if predictions[column].isna().any():
            row = predictions[predictions[column].isna()].iloc[0]
            raise ValueError(f"{path}: no {column} for image '{row.image_id}', label '{row.label}'")
    for split in QC_SPLITS:
        if not (predictions["split"] == split).any():
            raise ValueError(f"{path}: no {split} images; quality control fits on val and evaluates on test")


@dataclass
class QCSettings:
    """Config ``qc`` (docs/configuration.md)."""

    methods: list[str] = field(default_factory=lambda: ["IXG", "LRP"])
    baselines: list[str] = field(default_factory=lambda: ["entropy", "tta"])
    maps: str = "raw"
    grid_step: float = 0.001
    resamples: int = 30
    ci_resamples: int = 2000
    confidence: float = 0.95
    tta: dict = field(default_factory=dict)


def _split_ids(predictions: pd.DataFrame) -> dict[str, list[str]]:
    """Per split, the image ids in the order of the predictions table."""
    return {s: list(dict.fromkeys(predictions.loc[predictions["split"] == s, "image_id"])) for s in QC_SPLITS}


def _arrays(pred: pd.DataFrame, labels: list[str], column: str) -> dict[str, np.ndarray]:
    """Per split, the N x L matrix of one column of the predictions table."""
    out = {}
    for split in QC_SPLITS:
        part = pred[pred["split"] == split]
        out[split] = (
            part.pivot(index="image_id", columns="label", values=column)
            .loc[part["image_id"].drop_duplicates(), labels]
            .to_numpy()
        )
    return out


def quality_control(
    predictions: pd.DataFrame, distinctiveness: dict[str, dict[str, np.ndarray]], settings: QCSettings, seed: int
) -> dict[str, pd.DataFrame]:
    """Every table of the branch from the predictions table and, per INFORMER variant, the class distinctiveness
    (per split, N x L in the order of the predictions' images)."""
    labels = list(dict.fromkeys(predictions["label"]))
    ids = _split_ids(predictions)
    for s in QC_SPLITS:
        if not ids[s]:
            raise ValueError(f"quality control needs {s} images; the {s} split is empty")
    truth, prob = _arrays(predictions, labels, "truth"), _arrays(predictions, labels, "probability")
    truth = {s: v.astype(bool) for s, v in truth.items()}
    youden = np.array([youden_threshold(truth["val"][:, j], prob["val"][:, j], lab) for j, lab in enumerate(labels)])
    pred = {s: prob[s] >= youden for s in QC_SPLITS}
    informer = list(distinctiveness)
    baselines = [BASELINES[key][0] for key in settings.baselines]
    scores = {name: (per_split, LOW) for name, per_split in distinctiveness.items()}
    for key in settings.baselines:
        name, column = BASELINES[key]
        scores[name] = (_arrays(predictions, labels, column), HIGH)

    threshold_rows, score_rows, f1_rows = [], [], []
    test_predictions = {}
    for name, (per_split, direction) in scores.items():
        flagged = {s: np.zeros_like(pred[s]) for s in QC_SPLITS}
        for j, label in enumerate(labels):
            found = search_tau(
                per_split["val"][:, j], pred["val"][:, j], truth["val"][:, j], direction, settings.grid_step
            )
            for s in QC_SPLITS:
                flagged[s][:, j] = flag(per_split[s][:, j], found.tau, direction)
            threshold_rows.append(
                {
                    "method": name,
                    "label": label,
                    "flagged_when": f"score {'<' if direction == LOW else '>'} tau",
                    "tau": found.tau,
                    "grid_points": found.n_grid,
                    "youden_threshold": youden[j],
                    "val_f1_no_qc": found.f1_without,
                    "val_f1": found.f1_with,
                    "val_flagged": found.n_flagged,
                    "n_val": len(ids["val"]),
                }
            )
        for s in QC_SPLITS:
            fixed = corrected(pred[s], flagged[s])
            score_rows.append(
                pd.DataFrame(
                    {
                        "image_id": np.repeat(ids[s], len(labels)),
                        "split": s,
                        "label": np.tile(labels, len(ids[s])),
                        "method": name,
                        "score": per_split[s].ravel(),
                        "truth": truth[s].astype(int).ravel(),
                        "probability": prob[s].ravel(),
                        "prediction": pred[s].astype(int).ravel(),
                        "flagged": flagged[s].astype(int).ravel(),
                        "corrected": fixed.astype(int).ravel(),
                    }
                )
            )
        test_predictions[name] = corrected(pred["test"], flagged["test"])
        auc = error_auc(per_split["test"], pred["test"], truth["test"], direction)
        f1_rows.append(_f1_rows(name, test_predictions[name], truth["test"], flagged["test"], labels, auc))
    test_predictions[NO_QC] = pred["test"]
    f1_rows.append(_f1_rows(NO_QC, pred["test"], truth["test"], np.zeros_like(pred["test"]), labels))
    f1 = pd.concat(f1_rows, ignore_index=True)

    boot_seed = stable_seed(seed, "qc_bootstrap")
    n_ci = max(settings.ci_resamples, settings.resamples)
    boot = bootstrap_f1(test_predictions, truth["test"], n_ci, boot_seed)
    mean_t = {m: v[: settings.resamples].mean(axis=1) for m, v in boot.items()}
    mean_ci = {m: v.mean(axis=1) for m, v in boot.items()}
    comparisons = paired_comparisons(mean_t, mean_ci, informer, [*baselines, NO_QC], settings.confidence)
    boot_rows = []
    for m, v in boot.items():
        for r in range(settings.resamples):
            boot_rows += [{"resample": r + 1, "method": m, "label": lab, "f1": v[r, j]} for j, lab in enumerate(labels)]
            boot_rows.append({"resample": r + 1, "method": m, "label": "mean", "f1": mean_t[m][r]})
    return {
        "thresholds": pd.DataFrame(threshold_rows),
        "scores": pd.concat(score_rows, ignore_index=True),
        "f1": f1,
        "bootstrap": pd.DataFrame(boot_rows),
        "comparisons": comparisons,
        "table1": table1(f1, [*informer, *baselines, NO_QC], labels, {}),
        "meta": pd.DataFrame({"n_val": [len(ids["val"])], "n_test": [len(ids["test"])], "bootstrap_seed": [boot_seed]}),
    }


def error_auc(score: np.ndarray, prediction: np.ndarray, truth: np.ndarray, direction: str) -> np.ndarray:
    """Per class, the ROC AUC of the score (oriented so that the flagged end ranks first) at telling the wrong
    predictions from the right ones: 0.5 is no information, below 0.5 the score points the wrong way. NaN where
    every prediction of the class is right or every one wrong. A diagnostic beside the paper's F1."""
    from sklearn.metrics import roc_auc_score

    wrong = np.asarray(prediction).astype(bool) != np.asarray(truth).astype(bool)
    oriented = -np.asarray(score, np.float64) if direction == LOW else np.asarray(score, np.float64)
    return np.array(
        [
            roc_auc_score(wrong[:, j], oriented[:, j]) if 0 < wrong[:, j].sum() < len(wrong) else np.nan
            for j in range(wrong.shape[1])
        ]
    )


def _f1_rows(name: str, prediction, truth, flagged, labels, auc=None) -> pd.DataFrame:
    """Test F1, flag rate and error AUC of one method: a row per class and one for the mean over classes."""
    per_class = f1_per_class(prediction, truth)
    auc = np.full(len(labels), np.nan) if auc is None else auc
    rows = [
        {
            "method": name,
            "label": lab,
            "f1": per_class[j],
            "flag_rate": flagged[:, j].mean(),
            "n_flagged": int(flagged[:, j].sum()),
            "n_test": len(truth),
            "error_auc": auc[j],
        }
        for j, lab in enumerate(labels)
    ]
    rows.append(
        {
            "method": name,
            "label": "mean",
            "f1": per_class.mean(),
            "flag_rate": flagged.mean(),
            "n_flagged": int(flagged.sum()),
            "n_test": len(truth),
            "error_auc": np.nanmean(auc) if np.isfinite(auc).any() else np.nan,
        }
    )
    return pd.DataFrame(rows)


def table_notes(tables: dict[str, pd.DataFrame], settings: QCSettings, model: str, tta: TTASettings) -> list[str]:
    """Every rule behind Table 1, in words (the table's notes)."""
    meta = tables["meta"].iloc[0]
    n_labels = len(tables["table1"].columns) - 2  # Method, a column per class, Mean F1
    notes = [
        f"Model {model}; a prediction is positive when its sigmoid output reaches the class's Youden-index threshold "
        f"on the validation split ({int(meta.n_val)} images).",
        f"INFORMER-<method>: class distinctiveness d_i = sum over the other classes of 1 - cosine similarity of the "
        f"class maps ({settings.maps} attributions of <method>, every class's logit explained); d_i < tau_i is flagged.",
    ]
    if ENTROPY in set(tables["f1"]["method"]):
        notes.append("Pred. Entropy: binary entropy of the sigmoid output (bits); entropy > tau_i is flagged.")
    if TTA in set(tables["f1"]["method"]):
        notes.append(
            f"TTA: standard deviation of the sigmoid output over {tta.passes} seeded passes (rotation up to "
            f"{tta.rotation:g} degrees, {tta.blur_kernel} x {tta.blur_kernel} box blur, random crop with padding "
            f"{tta.crop_padding}); spread > tau_i is flagged."
        )
    notes += [
        f"tau_i: grid search with step {settings.grid_step:g} from 0 to the validation maximum of the score, maximizing "
        "the validation F1 after the flagged predictions are flipped; ties go to the threshold flagging the fewest "
        "validation predictions.",
        f"F1 on the {int(meta.n_test)} test images after flipping the flagged predictions; Mean F1 over the "
        f"{n_labels} classes; No QC: no prediction flipped. Bold: best in the column.",
        f"Bootstrap (seed {int(meta.bootstrap_seed)}): {settings.resamples} resamples of the test images with "
        "replacement to the test set's size (Fig. 3) and a two-sided paired t-test of the mean F1 of each INFORMER "
        "variant against each baseline, as the paper. The resamples are not independent test sets: wherever the "
        "mean difference is not 0, the t-test's p-value falls as resamples are added. The conclusion is therefore "
        f"the {settings.confidence:.0%} percentile interval of the paired difference over "
        f"{max(settings.ci_resamples, settings.resamples)} resamples (better/worse when it excludes 0), one "
        "interval per comparison, not adjusted for the number of comparisons. The thresholds are held fixed: "
        "their own uncertainty is in neither.",
    ]
    f1 = tables["f1"]
    rates = f1[(f1["label"] == "mean") & (f1["method"] != NO_QC)]
    notes.append(
        "Test predictions flagged: "
        + "; ".join(f"{r.method} {r.flag_rate:.1%}" for r in rates.itertuples())
        + " (per class: f1.csv). Error AUC (mean over classes; 0.5 = the score carries no "
        "information on which predictions are wrong): "
        + "; ".join(f"{r.method} {r.error_auc:.3f}" for r in rates.itertuples())
        + "."
    )
    for _, r in tables["comparisons"].iterrows():
        same = r.mean_f1_difference == 0 and r.ci_low == 0 and r.ci_high == 0
        p = (
            f"{r.p_value:.3g}"
            if np.isfinite(r.p_value)
            else "n/a (identical F1 on every resample)"
            if same
            else "n/a (the same difference on every resample)"
        )
        notes.append(
            f"{r.method} vs {r.baseline}: mean F1 {r.mean_f1_difference:+.3f}, paired t p={p} {r.stars}".rstrip()
            + f"; {r.ci_level:.0%} interval [{r.ci_low:+.3f}, {r.ci_high:+.3f}]: {r.conclusion}."
        )
    return notes


def run_quality_control(
    predictions_path, class_maps: dict[str, str], settings: dict, seed: int, model: str, outputs: dict
) -> None:
    """Stage entry: the branch's tables (``outputs``: thresholds, scores, f1, bootstrap, comparisons, table_csv,
    table_md, table_tex, table_html)."""
    cfg = QCSettings(**settings)
    predictions = pd.read_csv(predictions_path, dtype={"image_id": str, "label": str})
    check_predictions(predictions, predictions_path)
    if "tta" in cfg.baselines and predictions["tta_spread"].isna().any():
        raise ValueError(f"{predictions_path}: no TTA spread, but qc.baselines lists tta; run qc_predictions again")
    labels = list(dict.fromkeys(predictions["label"]))
    ids = _split_ids(predictions)
    distinctiveness = {}
    for method, path in class_maps.items():
        d, file_labels = class_map_distinctiveness(path, ids["val"] + ids["test"], cfg.maps)
        if file_labels != labels:
            raise ValueError(f"{path}: class maps of {file_labels}, the predictions are of {labels}")
        distinctiveness[informer_name(method)] = {"val": d[: len(ids["val"])], "test": d[len(ids["val"]) :]}
    tables = quality_control(predictions, distinctiveness, cfg, seed)
    tta = TTASettings(**cfg.tta)
    notes = table_notes(tables, cfg, model, tta)
    title = "Quality control of the predictions: F1 after flipping flagged predictions (INFORMER, Table 1 layout)"
    for key in ("thresholds", "scores", "f1", "bootstrap", "comparisons"):
        write_csv(tables[key], outputs[key])
    write_csv(tables["table1"], outputs["table_csv"])
    write_text(table1_markdown(tables["table1"], title, notes), outputs["table_md"])
    write_text(table1_latex(tables["table1"], title, notes), outputs["table_tex"])
    write_text(table1_html(tables["table1"], title, notes, tables["comparisons"]), outputs["table_html"])
    log.info("quality control: mean test F1 %s", tables["table1"].set_index("Method")["Mean F1"].round(3).to_dict())
