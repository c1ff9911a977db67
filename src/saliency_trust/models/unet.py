"""U-Net high baseline (SPEC 4 and 6; Arun et al., "High baselines").

A segmentation network trained on the ground-truth masks of the target label
gives the best localization a model of this data can be expected to reach. Its
sigmoid output on a test image is scored exactly like a saliency map (utility),
and two U-Nets trained with different seeds give the high baseline of
repeatability and reproducibility (SSIM between their maps).

Architecture: Ronneberger et al. (2015) at CPU size: ``depth`` levels of two
3 x 3 conv-BN-ReLU layers, max-pool down, transposed-conv up with skip
connections, a 1 x 1 conv to one logit per pixel. Loss: binary cross-entropy
plus soft Dice on the positive training images of the target label (only
positive images are scored; ``positives_only: false`` adds the negatives, whose
masks are empty); Adam;
early stopping on the validation Dice of the positive images, with patience;
the best epoch's weights are kept; seeded like the classifiers.
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

from saliency_trust.io import write_csv, write_json
from saliency_trust.models.serialization import save_torch
from saliency_trust.models.train import EarlyStopping, EpochCheckpoint, fit_epochs

log = logging.getLogger(__name__)


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
    )


class UNet(nn.Module):
    """U-Net with ``depth`` poolings; input H and W must be divisible by 2**depth (else padded)."""

    def __init__(self, in_channels: int = 1, width: int = 16, depth: int = 3):
        super().__init__()
        self.depth = depth
        chans = [width * 2**k for k in range(depth + 1)]
        self.down = nn.ModuleList([_double_conv(in_channels, chans[0])]
                                  + [_double_conv(chans[k], chans[k + 1]) for k in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[k + 1], chans[k], 2, stride=2) for k in reversed(range(depth))])
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
    """U-Net training settings (config ``baselines.unet``)."""

    epochs: int = 20
    patience: int = 4
    lr: float = 1e-3
    batch_size: int = 16
    width: int = 16
    depth: int = 3
    positives_only: bool = True


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    return (1 - (2 * inter + eps) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + eps)).mean()


@torch.no_grad()
def predict_masks(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 32) -> np.ndarray:
    """Per-pixel logits, N x H x W, for N x H x W images."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).unsqueeze(1).to(device)
        logits = model(x).float()
        if not torch.isfinite(logits).all():
            raise FloatingPointError(f"U-Net output is NaN/inf for images {start}..{start + len(x) - 1}")
        out.append(logits[:, 0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, *images.shape[1:]), np.float32)


def dice_at_half(logits: np.ndarray, masks: np.ndarray) -> float:
    """Mean Dice of (sigmoid > 0.5) against the masks; 1 for an empty pair."""
    pred, truth = logits > 0, masks > 0
    inter = (pred & truth).sum(axis=(1, 2))
    total = pred.sum(axis=(1, 2)) + truth.sum(axis=(1, 2))
    return float(np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0).mean()) if len(masks) else float("nan")


def train_unet(data, label: str, settings: UNetSettings, seed: int, device: torch.device,
               checkpoint: EpochCheckpoint | None = None) -> tuple[UNet, pd.DataFrame, dict]:
    """Train one U-Net on the masks of ``label`` (resuming ``checkpoint`` when given); return (best model,
    history, metrics)."""
    torch.manual_seed(seed)
    li = data.label_index(label)
    tr = data.positive_indices("train", label) if settings.positives_only else data.indices("train")
    va = data.positive_indices("val", label)
    te = data.positive_indices("test", label)
    if len(va) == 0:
        raise ValueError(f"the validation split has no positive images for label '{label}' (U-Net early stopping)")
    model = UNet(1, settings.width, settings.depth).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    masks = data.masks[:, li].astype(np.float32)
    train_set = TensorDataset(torch.from_numpy(data.images[tr]).unsqueeze(1), torch.from_numpy(masks[tr]).unsqueeze(1))
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_set, batch_size=settings.batch_size, shuffle=True, generator=gen)
    stopper = EarlyStopping(settings.patience, "val Dice")

    def run_epoch(epoch: int) -> dict:
        t0 = time.perf_counter()
        model.train()
        total, seen = 0.0, 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = F.binary_cross_entropy_with_logits(logits, y) + soft_dice_loss(logits, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"U-Net training loss became NaN/inf at epoch {epoch}")
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
            seen += len(x)
        val_dice = dice_at_half(predict_masks(model, data.images[va], device), masks[va])
        row = {"epoch": epoch, "train_loss": total / seen, "val_dice": val_dice, "seconds": time.perf_counter() - t0}
        log.info("unet epoch %d/%d train_loss %.4f val_dice %.4f (%.1f images/s)", epoch, settings.epochs,
                 row["train_loss"], val_dice, seen / row["seconds"])
        return row

    history = fit_epochs(model, opt, stopper, settings.epochs, run_epoch, "val_dice", [gen], checkpoint)
    best, best_epoch = stopper.best, stopper.best_epoch
    metrics = {
        "seed": seed, "label": label, "best_epoch": best_epoch, "epochs_run": len(history), "val_dice": best,
        "test_dice": dice_at_half(predict_masks(model, data.images[te], device), masks[te]),
        "settings": asdict(settings),
    }
    return model, pd.DataFrame(history), metrics


def run_train_unet(manifest_path, images_path, target_label: str | None, settings: dict, seed: int, device: str,
                   threads: int, model_path, history_path, metrics_path) -> None:
    """Stage entry: train one U-Net replicate; write model.pt, history.csv, metrics.json."""
    from saliency_trust.data.canonical import dataset_fingerprint, load_dataset
    from saliency_trust.models.train import select_device

    torch.set_num_threads(max(int(threads), 1))
    data = load_dataset(manifest_path, images_path)
    label = target_label or data.label_names[0]
    us = UNetSettings(**settings)
    checkpoint = EpochCheckpoint(model_path, {"arch": "unet", "settings": asdict(us), "seed": seed, "label": label,
                                              "data": dataset_fingerprint(manifest_path, images_path)})
    model, history, metrics = train_unet(data, label, us, seed, select_device(device), checkpoint)
    log.info("unet: best epoch %d, val Dice %.4f, test Dice %.4f", metrics["best_epoch"], metrics["val_dice"],
             metrics["test_dice"])
    save_torch({"arch": "unet", "settings": asdict(us), "label": label,
                "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}, model_path)
    write_csv(history, history_path)
    write_json(metrics, metrics_path)
    checkpoint.remove()


def load_unet(path, device: torch.device | str = "cpu") -> UNet:
    payload = torch.load(path, map_location=device, weights_only=True)
    s = payload["settings"]
    model = UNet(1, s["width"], s["depth"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()
