"""U-Net high baseline (Arun et al., Methods "U-Net" and "High baselines").

A segmentation network trained on the ground-truth masks of the target label
gives the best localization a model of this data can be expected to reach. Its
map of a test image is scored exactly like a saliency map (utility), and two
U-Nets trained with different seeds give the high baseline of repeatability and
reproducibility (SSIM between their maps).

Architecture: the base U-Net of Ronneberger et al. (2015), no pretraining, at
CPU size: ``depth`` levels of two 3 x 3 conv-BN-ReLU layers, max-pool down,
transposed-conv up with skip connections, a 1 x 1 conv to one logit per pixel.

Training follows the paper's U-Net recipe: balanced sampling of positive and
negative training images (negatives have empty masks); a mix of focal loss
(torchvision's ``sigmoid_focal_loss``) and soft Dice loss, the Dice computed
over the whole batch so that negatives' empty masks cannot make it undefined;
Adam with default betas; the learning rate x ``lr_factor`` when the validation
loss has not decreased for more than ``lr_patience`` epochs (ReduceLROnPlateau);
early stopping on the validation loss with ``patience``, keeping the weights of
the best validation loss; everything seeded from the replicate's seed. The
output layer may start at a foreground prior (``init_prior``, Lin et al. 2017;
off by default, as in the paper). The map
is the sigmoid of the logit, or (``output: uint8``, the paper's final step)
sigmoid x 255 rounded, i.e. values k / 255.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.ops import sigmoid_focal_loss

from saliency_trust.data.loading import to_device, training_loader
from saliency_trust.io import write_csv, write_json
from saliency_trust.models.serialization import save_torch
from saliency_trust.models.train import EarlyStopping, EpochCheckpoint, balanced_sampler, fit_epochs

log = logging.getLogger(__name__)

MAP_OUTPUTS = ("probability", "uint8")


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class UNet(nn.Module):
    """U-Net with ``depth`` poolings; input H and W must be divisible by 2**depth (else padded)."""

    def __init__(self, in_channels: int = 1, width: int = 16, depth: int = 3):
        super().__init__()
        self.depth = depth
        chans = [width * 2**k for k in range(depth + 1)]
        self.down = nn.ModuleList(
            [_double_conv(in_channels, chans[0])] + [_double_conv(chans[k], chans[k + 1]) for k in range(depth)]
        )
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(chans[k + 1], chans[k], 2, stride=2) for k in reversed(range(depth))]
        )
        self.merge = nn.ModuleList([_double_conv(2 * chans[k], chans[k]) for k in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2**self.depth
        x = F.pad(x, (0, (-w) % m, 0, (-h) % m), mode="replicate")
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)[..., :h, :w]


@dataclass(frozen=True)
class UNetSettings:
    """U-Net training settings (config ``baselines.unet`` less ``output``); the defaults are the paper's
    (Arun et al., methods "U-Net") except the CPU-sized network (``width``, ``depth``)."""

    epochs: int = 75
    patience: int = 15
    lr: float = 1e-4
    batch_size: int = 4
    width: int = 16
    depth: int = 3
    positives_only: bool = False
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    dice_weight: float = 1.0
    lr_factor: float = 0.1
    lr_patience: int = 3
    init_prior: float | None = None


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0, batch: bool = False) -> torch.Tensor:
    """1 - soft Dice of sigmoid(logits) and ``target`` (N x 1 x H x W), smoothed by ``eps``: the mean of the
    per-image losses, or with ``batch`` one Dice over all pixels of the batch (defined for empty masks)."""
    p = torch.sigmoid(logits)
    dims = tuple(range(p.ndim)) if batch else tuple(range(1, p.ndim))
    inter = (p * target).sum(dim=dims)
    return (1 - (2 * inter + eps) / (p.sum(dim=dims) + target.sum(dim=dims) + eps)).mean()


def focal_dice_loss(logits: torch.Tensor, target: torch.Tensor, settings: UNetSettings) -> torch.Tensor:
    """The paper's "mix of focal and dice loss": torchvision's sigmoid focal loss (mean over pixels) plus
    ``dice_weight`` x the batch-level soft Dice loss (one Dice over the whole batch, so batches of negatives,
    whose masks are empty, give a finite loss that pushes their predictions to zero)."""
    focal = sigmoid_focal_loss(logits, target, alpha=settings.focal_alpha, gamma=settings.focal_gamma, reduction="mean")
    return focal + settings.dice_weight * soft_dice_loss(logits, target, batch=True)


class PlateauStopping(EarlyStopping):
    """Early stopping on the validation loss (lower is better) with ``ReduceLROnPlateau`` on the same loss.

    The scheduler's state travels in this object's state dict, so the epoch checkpoint of
    :func:`~saliency_trust.models.train.fit_epochs` (which saves the optimizer and the early stopping state)
    resumes the learning-rate schedule too. ``best`` holds minus the best validation loss.
    """

    def __init__(self, patience: int, opt: torch.optim.Optimizer, lr_factor: float, lr_patience: int):
        super().__init__(patience, "-val loss")
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=lr_factor, patience=lr_patience
        )

    def update(self, model: nn.Module, epoch: int, score: float) -> bool:
        """``score`` is the epoch's validation loss."""
        self.scheduler.step(score)
        return super().update(model, epoch, -score)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.scheduler.load_state_dict(state["scheduler"])


@torch.no_grad()
def predict_masks(model: nn.Module, images, device: torch.device, batch_size: int = 32) -> np.ndarray:
    """Per-pixel logits, N x H x W, for N x H x W images (an array or a row view read batch by batch)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).unsqueeze(1).to(device)
        logits = model(x).float()
        if not torch.isfinite(logits).all():
            raise FloatingPointError(f"U-Net output is NaN/inf for images {start}..{start + len(x) - 1}")
        out.append(logits[:, 0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, *images.shape[1:]), np.float32)


def logits_to_map(logits: np.ndarray, output: str = "probability") -> np.ndarray:
    """The U-Net map (float32) of per-pixel logits: ``probability`` = sigmoid; ``uint8`` = the paper's final
    image, round(255 x sigmoid) / 255 (values k / 255; sigmoid computed in float64)."""
    if output not in MAP_OUTPUTS:
        raise ValueError(f"U-Net output must be one of {MAP_OUTPUTS}, got '{output}'")
    p = torch.sigmoid(torch.from_numpy(np.asarray(logits, np.float64))).numpy()  # no overflow warning
    if output == "uint8":
        p = np.round(255.0 * p) / 255.0
    return p.astype(np.float32)


def dice_at_half(logits: np.ndarray, masks: np.ndarray) -> float:
    """Mean Dice of (sigmoid > 0.5) against the masks; 1 for an empty pair."""
    pred, truth = logits > 0, masks > 0
    inter = (pred & truth).sum(axis=(1, 2))
    total = pred.sum(axis=(1, 2)) + truth.sum(axis=(1, 2))
    return float(np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0).mean()) if len(masks) else float("nan")


def validation_loss(logits: np.ndarray, masks: np.ndarray, settings: UNetSettings) -> float:
    """The training loss over the whole validation set at once (focal mean over its pixels + one Dice)."""
    lg = torch.from_numpy(logits).double().unsqueeze(1)
    return float(focal_dice_loss(lg, torch.from_numpy(masks).double().unsqueeze(1), settings))


def balanced_loader(
    images: np.ndarray, masks: np.ndarray, positive: np.ndarray, batch_size: int, seed: int
) -> DataLoader:
    """Training batches of (image, mask), N x 1 x H x W each: an epoch of ``len(images)`` draws with replacement,
    positive and negative images with equal probability (Arun et al., "U-Net": balanced sampling), seeded
    (the generator is ``loader.sampler.generator``)."""
    data = TensorDataset(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(masks).unsqueeze(1))
    sampler = balanced_sampler(np.asarray(positive, np.float32).reshape(-1, 1), seed)
    return DataLoader(data, batch_size=batch_size, sampler=sampler)


def train_unet(
    data, label: str, settings: UNetSettings, seed: int, device: torch.device, checkpoint: EpochCheckpoint | None = None
) -> tuple[UNet, pd.DataFrame, dict]:
    """Train one U-Net on the masks of ``label`` (resuming ``checkpoint`` when given); return (best model,
    history, metrics). Trains on balanced positive and negative training images (or the positives only) and
    validates on the same population of the validation split."""
    torch.manual_seed(seed)
    li = data.label_index(label)
    positive = data.labels()[:, li] > 0
    tr = data.positive_indices("train", label) if settings.positives_only else data.indices("train")
    va = data.positive_indices("val", label) if settings.positives_only else data.indices("val")
    va_pos = data.positive_indices("val", label)
    te = data.positive_indices("test", label)
    if len(va_pos) == 0:
        raise ValueError(f"the validation split has no positive images for label '{label}' (U-Net early stopping)")
    if len(tr) == 0:
        raise ValueError(f"the training split has no images for the U-Net of label '{label}'")
    model = UNet(1, settings.width, settings.depth)
    if settings.init_prior is not None:  # the focal-loss prior of Lin et al. (2017)
        nn.init.constant_(model.head.bias, -float(np.log((1 - settings.init_prior) / settings.init_prior)))
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sampler = balanced_sampler(np.asarray(positive[tr], np.float32).reshape(-1, 1), seed)
    loader = training_loader(data, tr, settings.batch_size, sampler, device, mask_label=li)
    masks_va = np.asarray(data.masks[va, li], dtype=np.float32)  # the validation loss is over the whole split
    stopper = PlateauStopping(settings.patience, opt, settings.lr_factor, settings.lr_patience)

    def run_epoch(epoch: int) -> dict:
        t0 = time.perf_counter()
        model.train()
        lr = opt.param_groups[0]["lr"]
        total, seen = 0.0, 0
        for x, y in loader:
            x, y = to_device(x, device), to_device(y, device)
            opt.zero_grad(set_to_none=True)
            loss = focal_dice_loss(model(x), y, settings)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"U-Net training loss became NaN/inf at epoch {epoch}")
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
            seen += len(x)
        val_logits = predict_masks(model, data.image_rows(va), device)
        val_loss = validation_loss(val_logits, masks_va, settings)
        val_dice = dice_at_half(val_logits[np.isin(va, va_pos)], masks_va[np.isin(va, va_pos)])
        row = {
            "epoch": epoch,
            "train_loss": total / seen,
            "val_dice": val_dice,
            "val_loss": val_loss,
            "lr": lr,
            "seconds": time.perf_counter() - t0,
        }
        log.info(
            "unet epoch %d/%d lr %.1e train_loss %.4f val_loss %.4f val_dice %.4f (%.1f images/s)",
            epoch,
            settings.epochs,
            lr,
            row["train_loss"],
            val_loss,
            val_dice,
            seen / row["seconds"],
        )
        return row

    history = fit_epochs(model, opt, stopper, settings.epochs, run_epoch, "val_loss", [sampler.generator], checkpoint)
    best_epoch = stopper.best_epoch
    metrics = {
        "seed": seed,
        "label": label,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "val_loss": -stopper.best,
        "val_dice": history[best_epoch - 1]["val_dice"],
        "test_dice": dice_at_half(
            predict_masks(model, data.image_rows(te), device), np.asarray(data.masks[te, li], dtype=np.float32)
        ),
        "n_train": int(len(tr)),
        "n_train_positive": int(positive[tr].sum()),
        "settings": asdict(settings),
    }
    return model, pd.DataFrame(history), metrics


def run_train_unet(
    manifest_path,
    images_path,
    target_label: str | None,
    settings: dict,
    seed: int,
    device: str,
    threads: int,
    model_path,
    history_path,
    metrics_path,
) -> None:
    """Stage entry: train one U-Net replicate; write model.pt, history.csv, metrics.json. ``settings`` is config
    ``baselines.unet``; its ``output`` (the map format) does not concern training and is ignored here."""
    from saliency_trust.data.canonical import dataset_fingerprint, load_dataset
    from saliency_trust.models.train import select_device

    torch.set_num_threads(max(int(threads), 1))
    data = load_dataset(manifest_path, images_path)
    label = target_label or data.label_names[0]
    us = UNetSettings(**{k: v for k, v in settings.items() if k != "output"})
    checkpoint = EpochCheckpoint(
        model_path,
        {
            "arch": "unet",
            "settings": asdict(us),
            "seed": seed,
            "label": label,
            "data": dataset_fingerprint(manifest_path, images_path),
        },
    )
    model, history, metrics = train_unet(data, label, us, seed, select_device(device), checkpoint)
    log.info(
        "unet: best epoch %d, val loss %.4f, val Dice %.4f, test Dice %.4f",
        metrics["best_epoch"],
        metrics["val_loss"],
        metrics["val_dice"],
        metrics["test_dice"],
    )
    save_torch(
        {
            "arch": "unet",
            "settings": asdict(us),
            "label": label,
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        },
        model_path,
    )
    write_csv(history, history_path)
    write_json(metrics, metrics_path)
    checkpoint.remove()


def load_unet(path, device: torch.device | str = "cpu") -> UNet:
    payload = torch.load(path, map_location=device, weights_only=True)
    s = payload["settings"]
    model = UNet(1, s["width"], s["depth"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()
