"""Classifier training (docs/outputs.md; Arun et al., Methods "Model Training").

Binary cross-entropy on one logit per label, Adam, balanced sampling of
positive and negative images, early stopping on validation AUC with patience;
the weights of the best validation epoch are kept. All randomness (weight
init, sampling order, augmentation) comes from one seed.

The epoch loop (:func:`fit_epochs`) is shared with the U-Net and the detector.
After every epoch it saves the whole training state (weights, optimizer, early
stopping, history, every random generator) to ``model.resume.pt`` beside the
model; a killed training job resumes after its last finished epoch and ends
with exactly the model an uninterrupted run gives (on the CPU). The file is
removed once the model is written.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import WeightedRandomSampler

from saliency_trust.data.canonical import CanonicalDataset
from saliency_trust.data.loading import to_device, training_loader
from saliency_trust.io import write_csv, write_json
from saliency_trust.models.registry import build_model
from saliency_trust.models.serialization import save_torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Training hyper-parameters (config ``training``, overridable per model)."""

    epochs: int = 30
    patience: int = 5
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    hflip: bool = True
    input_size: int | None = None
    pretrained_weights: str | None = None

    @classmethod
    def from_config(cls, training: dict, model_entry: dict) -> TrainSettings:
        fields = cls.__dataclass_fields__
        merged = {k: v for k, v in training.items() if k in fields}
        merged.update({k: v for k, v in model_entry.items() if k in fields})
        return cls(**merged)


def select_device(requested: str = "auto") -> torch.device:
    """``auto`` picks CUDA when visible, else CPU; a requested ``cuda`` falls back to the CPU when no GPU is
    visible (a GPU allocated by SLURM without a working driver, a login node, a laptop)."""
    available = torch.cuda.is_available()
    if requested == "auto":
        device = torch.device("cuda" if available else "cpu")
    elif requested.startswith("cuda") and not available:
        log.warning("device '%s' requested but no GPU is visible; using the CPU", requested)
        device = torch.device("cpu")
    else:
        device = torch.device(requested)
    log.info(
        "device %s (requested %s; CUDA available: %s; CUDA_VISIBLE_DEVICES=%s; torch threads %d)",
        device,
        requested,
        available,
        os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
        torch.get_num_threads(),
    )
    return device


class EarlyStopping:
    """Keep the weights of the best validation epoch; say when ``patience`` epochs brought no improvement.

    Shared by the classifiers, the U-Net and the detector (Arun et al.: early stopping with patience).
    A NaN score never counts as an improvement.
    """

    def __init__(self, patience: int, score_name: str):
        self.patience, self.score_name = patience, score_name
        self.best, self.best_epoch, self.best_state, self.stale = -np.inf, 0, None, 0

    def update(self, model: nn.Module, epoch: int, score: float) -> bool:
        """Record one epoch's validation score; True when training should stop."""
        if score > self.best:
            self.best, self.best_epoch, self.stale = score, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.stale += 1
        if self.stale >= self.patience:
            log.info(
                "early stopping at epoch %d (best epoch %d, %s %.4f)",
                epoch,
                self.best_epoch,
                self.score_name,
                self.best,
            )
            return True
        return False

    def restore(self, model: nn.Module) -> None:
        model.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_state": self.best_state, "stale": self.stale}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.best_state, self.stale = (
            state[k] for k in ("best", "best_epoch", "best_state", "stale")
        )


def _numpy_rng_state() -> tuple:
    """numpy's global generator state with tensors in place of arrays (loadable with ``weights_only``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)


def _set_numpy_rng_state(state: tuple) -> None:
    name, keys, pos, has_gauss, gauss = state
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


class EpochCheckpoint:
    """The training state after the last finished epoch, in ``<model>.resume.pt`` beside the model.

    ``fingerprint`` (JSON-able: architecture, settings, seed, data checksums) must match for a resume;
    otherwise training starts afresh, with a warning. Written atomically after every epoch.
    """

    def __init__(self, model_path: str | Path, fingerprint: dict):
        self.path = Path(model_path).with_suffix(".resume.pt")
        self.fingerprint = fingerprint

    def save(
        self,
        epoch: int,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        stopper: EarlyStopping,
        history: list[dict],
        generators: list[torch.Generator],
        stopped: bool,
    ) -> None:
        state = {
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "stopped": stopped,
            "history": history,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "stopper": stopper.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": _numpy_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generators": [g.get_state() for g in generators],
        }
        save_torch(state, self.path)

    def restore(
        self, model: nn.Module, opt: torch.optim.Optimizer, stopper: EarlyStopping, generators: list[torch.Generator]
    ) -> tuple[int, list[dict], bool]:
        """(next epoch, history, stopped) from the checkpoint, or (1, [], False) when there is none to resume."""
        if not self.path.exists():
            return 1, [], False
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # a damaged checkpoint only costs the epochs it holds
            log.warning("%s: unreadable (%s); training from epoch 1", self.path, err)
            return 1, [], False
        if state.get("fingerprint") != self.fingerprint:
            log.warning("%s: written for other settings or data; training from epoch 1", self.path)
            return 1, [], False
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        stopper.load_state_dict(state["stopper"])
        torch.set_rng_state(state["torch_rng"])
        _set_numpy_rng_state(state["numpy_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        for gen, gen_state in zip(generators, state["generators"]):
            gen.set_state(gen_state)
        log.info(
            "resuming from %s: epoch %d finished%s",
            self.path,
            state["epoch"],
            ", early stopping reached" if state["stopped"] else "",
        )
        return state["epoch"] + 1, state["history"], state["stopped"]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def fit_epochs(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    stopper: EarlyStopping,
    epochs: int,
    run_epoch: Callable[[int], dict],
    score: str,
    generators: list[torch.Generator],
    checkpoint: EpochCheckpoint | None = None,
) -> list[dict]:
    """The epoch loop of every trainer: ``run_epoch(epoch)`` trains one epoch and returns its history row
    (with the validation ``score``); early stopping; the state is checkpointed after each epoch and a
    checkpoint is resumed. ``generators`` are every random generator training draws from besides torch's
    global one. Leaves the best epoch's weights in ``model``; returns the history rows."""
    epoch, history, stopped = checkpoint.restore(model, opt, stopper, generators) if checkpoint else (1, [], False)
    while not stopped and epoch <= epochs:
        row = run_epoch(epoch)
        history.append(row)
        stopped = stopper.update(model, epoch, row[score])
        if checkpoint:
            checkpoint.save(epoch, model, opt, stopper, history, generators, stopped)
        epoch += 1
    stopper.restore(model)
    return history


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def mean_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mean ROC AUC over labels (columns); NaN where a label has one class only."""
    aucs = [
        roc_auc_score(y_true[:, j], y_score[:, j]) if 0 < y_true[:, j].sum() < len(y_true) else np.nan
        for j in range(y_true.shape[1])
    ]
    return float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else float("nan")


@torch.no_grad()
def predict(model: nn.Module, images, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """Sigmoid probabilities, N x L, for N x H x W images (an array, or a
    :class:`~saliency_trust.data.canonical.RowView` read batch by batch)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).unsqueeze(1).to(device)
        logits = model(x).float()
        if not torch.isfinite(logits).all():
            raise FloatingPointError(f"model output is NaN/inf for images {start}..{start + len(x) - 1}")
        out.append(torch.sigmoid(logits).cpu().numpy())
    return np.concatenate(out)


def balanced_sampler(labels: np.ndarray, seed: int) -> WeightedRandomSampler:
    """Sample positives (any label) and negatives with equal probability."""
    positive = labels.max(axis=1) > 0
    n_pos, n_neg = positive.sum(), (~positive).sum()
    weights = np.where(positive, 0.5 / max(n_pos, 1), 0.5 / max(n_neg, 1))
    gen = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double), len(labels), replacement=True, generator=gen
    )


def train_classifier(
    data: CanonicalDataset,
    arch: str,
    settings: TrainSettings,
    seed: int,
    device: torch.device,
    checkpoint: EpochCheckpoint | None = None,
) -> tuple[nn.Module, pd.DataFrame, dict]:
    """Train one replicate (resuming ``checkpoint`` when given); return (best model, per-epoch history, metrics)."""
    seed_everything(seed)
    labels = data.labels()
    tr, va, te = data.indices("train"), data.indices("val"), data.indices("test")
    model = build_model(arch, len(data.label_names), settings.input_size, settings.pretrained_weights).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    sampler = balanced_sampler(labels[tr], seed)
    loader = training_loader(data, tr, settings.batch_size, sampler, device, labels=labels[tr])
    flip_gen = torch.Generator().manual_seed(seed + 1)
    stopper = EarlyStopping(settings.patience, "val AUC")

    def run_epoch(epoch: int) -> dict:
        t0 = time.perf_counter()
        model.train()
        total, n_seen = 0.0, 0
        for x, y in loader:
            if settings.hflip:
                flip = torch.rand(len(x), generator=flip_gen) < 0.5
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            x, y = to_device(x, device), to_device(y, device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{arch}: training loss became NaN/inf at epoch {epoch}")
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
            n_seen += len(x)
        p_tr, p_va = predict(model, data.image_rows(tr), device), predict(model, data.image_rows(va), device)
        val_loss = float(
            loss_fn(
                torch.logit(torch.from_numpy(p_va).double().clamp(1e-7, 1 - 1e-7)),
                torch.from_numpy(labels[va]).double(),
            )
        )
        row = {
            "epoch": epoch,
            "train_loss": total / n_seen,
            "val_loss": val_loss,
            "train_auc": mean_auc(labels[tr], p_tr),
            "val_auc": mean_auc(labels[va], p_va),
            "seconds": time.perf_counter() - t0,
        }
        log.info(
            "%s epoch %d/%d train_loss %.4f val_loss %.4f val_auc %.4f (%.1f images/s)",
            arch,
            epoch,
            settings.epochs,
            row["train_loss"],
            val_loss,
            row["val_auc"],
            n_seen / row["seconds"],
        )
        return row

    history = fit_epochs(
        model, opt, stopper, settings.epochs, run_epoch, "val_auc", [sampler.generator, flip_gen], checkpoint
    )
    best_auc, best_epoch = stopper.best, stopper.best_epoch
    p_te = predict(model, data.image_rows(te), device)
    metrics = {
        "arch": arch,
        "seed": seed,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "val_auc": best_auc,
        **test_auc_metrics(labels[te], p_te, data.label_names),
        "n_train": int(len(tr)),
        "n_val": int(len(va)),
        "settings": asdict(settings),
    }
    return model, pd.DataFrame(history), metrics


def save_checkpoint(
    model: nn.Module, arch: str, label_names: list[str], settings: TrainSettings, path: str | Path
) -> None:
    """Save weights plus everything needed to rebuild the model, atomically."""
    payload = {
        "arch": arch,
        "label_names": label_names,
        "input_size": settings.input_size,
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
    }
    save_torch(payload, path)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a trained model from :func:`save_checkpoint` output (eval mode)."""
    payload = torch.load(path, map_location=device, weights_only=True)
    model = build_model(payload["arch"], len(payload["label_names"]), payload["input_size"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload


def write_training_outputs(
    model, history, metrics, arch, label_names, settings, model_path, history_path, metrics_path
) -> None:
    save_checkpoint(model, arch, label_names, settings, model_path)
    write_csv(history, history_path)
    write_json(metrics, metrics_path)


def test_auc_metrics(labels: np.ndarray, scores: np.ndarray, label_names: list[str]) -> dict:
    """Mean test AUC over labels, the AUC of each label (None where the test set has one class only), and n."""
    return {
        "test_auc": mean_auc(labels, scores),
        "test_auc_per_label": {
            name: (float(roc_auc_score(labels[:, j], scores[:, j])) if 0 < labels[:, j].sum() < len(labels) else None)
            for j, name in enumerate(label_names)
        },
        "n_test": int(len(labels)),
    }


def run_evaluation(manifest_path, images_path, model_path, training_metrics_path, out_path, device: str = "cpu"):
    """Stage entry: the model's AUC on the dataset's current test images (``evaluation.json``, with the training
    job's validation AUC). Apart from training, so that new test images re-evaluate the model without retraining
    it (docs/new-data.md); test images are read batch by batch."""
    import json

    from saliency_trust.data.canonical import RowView, StoredArray, h5_image_ids

    manifest = pd.read_csv(manifest_path, dtype={"image_id": str})
    model, payload = load_checkpoint(model_path, select_device(device))
    label_names = [name for name in payload["label_names"] if name in manifest.columns]  # external: shared labels
    if not label_names:
        raise ValueError(f"{manifest_path}: none of the labels {payload['label_names']} that {model_path} predicts")
    test = manifest[manifest["split"] == "test"]
    ids = h5_image_ids(images_path)
    if ids != manifest["image_id"].tolist():
        raise ValueError(f"{images_path}: image ids do not match {manifest_path} (row order or content differs)")
    rows = np.flatnonzero(manifest["split"].to_numpy() == "test")
    scores = predict(model, RowView(StoredArray(images_path, "image"), rows), next(model.parameters()).device)
    columns = [payload["label_names"].index(name) for name in label_names]
    metrics = test_auc_metrics(test[label_names].to_numpy(dtype=np.float32), scores[:, columns], label_names)
    with open(training_metrics_path) as fh:
        metrics["val_auc"] = json.load(fh)["val_auc"]
    log.info("%s: test AUC %.4f on %d test images", model_path, metrics["test_auc"], metrics["n_test"])
    write_json(metrics, out_path)


def run_training(
    manifest_path,
    images_path,
    arch: str,
    settings: dict,
    seed: int,
    device: str,
    threads: int,
    model_path,
    history_path,
    metrics_path,
) -> None:
    """Stage entry: train one (architecture, replicate) and write model.pt, history.csv, metrics.json."""
    from saliency_trust.data.canonical import dataset_fingerprint, load_dataset

    torch.set_num_threads(max(int(threads), 1))
    data = load_dataset(manifest_path, images_path)
    ts = TrainSettings(**settings)
    checkpoint = EpochCheckpoint(
        model_path,
        {"arch": arch, "settings": asdict(ts), "seed": seed, "data": dataset_fingerprint(manifest_path, images_path)},
    )
    model, history, metrics = train_classifier(data, arch, ts, seed, select_device(device), checkpoint)
    log.info(
        "%s: best epoch %d, val AUC %.4f, test AUC %.4f",
        arch,
        metrics["best_epoch"],
        metrics["val_auc"],
        metrics["test_auc"],
    )
    write_training_outputs(model, history, metrics, arch, data.label_names, ts, model_path, history_path, metrics_path)
    checkpoint.remove()
