"""RetinaNet detector high baseline for datasets with boxes (docs/criteria.md; Arun et al., "High baselines").

Where the localization ground truth is boxes only (RSNA Pneumonia, MURA), the
papers' high baseline is a detector: torchvision's
:class:`~torchvision.models.detection.RetinaNet` trained on the boxes of the
target label, whose detections with a score above 0.01 become a pixel heat map
(each pixel = the highest score of the boxes covering it, 0 elsewhere). The
heat map is scored exactly like a saliency map (utility), and two detectors
trained with different seeds give a high baseline of repeatability and
reproducibility.

Model (no pretrained weights, nothing downloaded):

- backbone: a small CNN on the 1-channel image (a 3 x 3 stem, then
  ``levels + 1`` stages of two 3 x 3 conv-BN-ReLU layers, the first of stride 2;
  ``width`` channels doubling per stage up to 4 x ``width``) and a torchvision
  :class:`~torchvision.ops.FeaturePyramidNetwork` (``fpn_channels``) on the last
  ``levels`` stages, of strides 4, 8, ..., 2 ** (levels + 1);
- anchors: at the level of stride s, sizes ``anchor_scale * s * 2 ** (i / 3)``
  (i = 0, 1, 2) and aspect ratios 0.5, 1, 2 (torchvision's RetinaNet uses
  4 x stride for 800-px photographs; 2 x stride suits lesions of a few pixels
  at 64 px);
- torchvision's RetinaNet head, focal loss and box coder, one class;
  ``score_thresh = min_score`` (0.01: torchvision keeps scores strictly above
  it), NMS IoU 0.5, at most ``detections_per_img`` boxes;
- the input transform never resizes: images keep the dataset's resolution
  (they are only normalized with the training images' mean and standard
  deviation and zero-padded at the bottom/right to a multiple of the largest
  stride; the boxes come back in the original pixel frame).

Training boxes of an image (``boxes.csv``, target label): the ``truth`` rows if
the image has any, else its ``consensus`` rows, else every rater's boxes. Boxes
``(x, y, width, height)`` become ``(x, y, x + width, y + height)``: pixel
column c spans [c, c + 1). Training: Adam, focal + smooth-L1 losses as in
torchvision, gradient norm clipped at 10, the positive training images of the
target label that have boxes (``positives_only: false`` adds the negatives,
with no boxes); early stopping on the mean pixel average precision of the
heat map against the canonical ground-truth mask of the positive validation
images (the utility metric ``ap``), with patience; the best epoch's weights are
kept; seeded, deterministic on the CPU.

Heat map (:func:`boxes_to_heatmap`): a box covers the pixels whose centre
(c + 0.5, r + 0.5) lies in ``[x1, x2) x [y1, y2)``; a box thinner than one
pixel (no centre inside) covers the pixel row/column holding its centre -- the
rule the dataset adapters and the human reference use to rasterize boxes
(:func:`saliency_trust.data.geometry.pixel_span`); what lies outside the image
is dropped. The heat maps, in the saliency cache format, are written by
:func:`saliency_trust.saliency.baselines.run_detector_map`. Only boxes with a score strictly above
``min_score`` count.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork

from saliency_trust.data.geometry import pixel_span
from saliency_trust.data.loading import PermutationSampler, to_device, training_loader
from saliency_trust.io import write_csv, write_json
from saliency_trust.models.serialization import save_torch
from saliency_trust.models.train import EarlyStopping, EpochCheckpoint, fit_epochs

log = logging.getLogger(__name__)

MIN_SCORE = 0.01
GRAD_CLIP = 10.0
DETECTOR_METHOD = "DETECTOR"
BOX_SOURCES = ("truth", "consensus")  # preferred box sources, in order; else every rater's boxes


@dataclass(frozen=True)
class DetectorSettings:
    """Detector training settings (config ``baselines.detector``)."""

    epochs: int = 20
    patience: int = 4
    lr: float = 1e-3
    batch_size: int = 16
    width: int = 16
    fpn_channels: int = 32
    levels: int = 4
    anchor_scale: float = 2.0
    min_score: float = MIN_SCORE
    detections_per_img: int = 100
    positives_only: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.levels <= 6:
            raise ValueError(f"detector.levels must lie in 1..6, got {self.levels}")
        if not 0 <= self.min_score < 1:
            raise ValueError(f"detector.min_score must lie in [0, 1), got {self.min_score}")
        for name in ("epochs", "patience", "batch_size", "width", "fpn_channels", "detections_per_img"):
            if getattr(self, name) < 1:
                raise ValueError(f"detector.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.anchor_scale <= 0:
            raise ValueError("detector.lr and detector.anchor_scale must be positive")

    @property
    def strides(self) -> list[int]:
        return [2 ** (k + 2) for k in range(self.levels)]


# ---------------------------------------------------------------- model


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class SmallFPNBackbone(nn.Module):
    """Small CNN + FPN; returns ``levels`` feature maps of ``out_channels`` at strides 4, 8, ..."""

    def __init__(self, in_channels: int = 1, width: int = 16, levels: int = 4, fpn_channels: int = 32):
        super().__init__()
        chans = [width * 2 ** min(k, 2) for k in range(levels + 2)]  # stem, then one per stage
        self.stem = nn.Sequential(*_conv_bn(in_channels, chans[0]))
        self.stages = nn.ModuleList(
            nn.Sequential(*_conv_bn(chans[k], chans[k + 1], stride=2), *_conv_bn(chans[k + 1], chans[k + 1]))
            for k in range(levels + 1)
        )
        self.fpn = FeaturePyramidNetwork(chans[2:], fpn_channels)
        self.out_channels = fpn_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.stem(x)
        feats = OrderedDict()
        for k, stage in enumerate(self.stages):
            x = stage(x)
            if k >= 1:  # stride 4 onwards
                feats[str(k - 1)] = x
        return self.fpn(feats)


class _NoResizeTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform without the resize: normalize and pad only."""

    def resize(self, image, target=None):
        return image, target


def build_detector(
    image_shape: tuple[int, int], settings: DetectorSettings, image_mean: float = 0.5, image_std: float = 0.25
) -> RetinaNet:
    """A one-class RetinaNet for 1-channel images of ``image_shape`` (H, W), randomly initialized."""
    s = settings
    backbone = SmallFPNBackbone(1, s.width, s.levels, s.fpn_channels)
    sizes = tuple(tuple(s.anchor_scale * st * 2 ** (i / 3) for i in range(3)) for st in s.strides)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    h, w = (int(v) for v in image_shape)
    model = RetinaNet(
        backbone,
        num_classes=1,
        min_size=min(h, w),
        max_size=max(h, w),
        image_mean=[float(image_mean)],
        image_std=[float(image_std)],
        anchor_generator=anchors,
        score_thresh=s.min_score,
        detections_per_img=s.detections_per_img,
    )
    model.transform = _NoResizeTransform(
        min(h, w), max(h, w), [float(image_mean)], [float(image_std)], size_divisible=s.strides[-1]
    )
    return model


# ---------------------------------------------------------------- boxes and heat maps


def boxes_to_heatmap(boxes, scores, shape: tuple[int, int], min_score: float = MIN_SCORE) -> np.ndarray:
    """H x W float32 map: each pixel = the highest score of the boxes above ``min_score`` covering it, else 0.

    ``boxes``: N x 4 ``(x1, y1, x2, y2)`` in pixels (column c spans [c, c + 1));
    a box covers the pixels whose centre lies in ``[x1, x2) x [y1, y2)`` (see the
    module docstring for boxes thinner than a pixel). Scores equal to
    ``min_score`` do not count (torchvision keeps scores strictly above its
    ``score_thresh``).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(b) != len(sc):
        raise ValueError(f"{len(b)} boxes but {len(sc)} scores")
    if not (np.isfinite(b).all() and np.isfinite(sc).all()):
        raise ValueError("boxes or scores contain NaN or inf")
    h, w = shape
    heat = np.zeros((h, w), np.float32)
    for (x1, y1, x2, y2), score in zip(b, sc):
        if not score > min_score:
            continue
        c0, c1 = pixel_span(x1, x2, w)
        r0, r1 = pixel_span(y1, y2, h)
        if c1 > c0 and r1 > r0:
            np.maximum(heat[r0:r1, c0:c1], np.float32(score), out=heat[r0:r1, c0:c1])
    return heat


def detector_targets(boxes: pd.DataFrame, label: str) -> dict[str, np.ndarray]:
    """Training boxes per image id: K x 4 float32 ``(x1, y1, x2, y2)`` of ``label`` (source rule in the docstring)."""
    sel = boxes[boxes["label"].astype(str) == label]
    rater = sel["rater"].fillna("truth").astype(str)
    out = {}
    for image_id, rows in sel.groupby(sel["image_id"].astype(str), sort=True):
        r = rater.loc[rows.index]
        for source in BOX_SOURCES:
            if (r == source).any():
                rows = rows[r == source]
                break
        xywh = rows[["x", "y", "width", "height"]].to_numpy(dtype=np.float64)
        if not np.isfinite(xywh).all() or (xywh[:, 2:] <= 0).any():
            raise ValueError(f"image '{image_id}': a box of label '{label}' has a non-positive or missing size")
        out[image_id] = np.column_stack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]).astype(np.float32)
    return out


@torch.no_grad()
def predict_heatmaps(
    model: RetinaNet, images: np.ndarray, device: torch.device, min_score: float = MIN_SCORE, batch_size: int = 32
) -> np.ndarray:
    """Heat maps (N x H x W float32 in [0, 1]) of N x H x W images."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = [
            torch.from_numpy(np.ascontiguousarray(im, dtype=np.float32))[None].to(device)
            for im in images[start : start + batch_size]
        ]
        for k, det in enumerate(model(batch)):
            scores = det["scores"].float().cpu().numpy()
            if not np.isfinite(scores).all():
                raise FloatingPointError(f"detector scores are NaN/inf for image {start + k}")
            out.append(boxes_to_heatmap(det["boxes"].float().cpu().numpy(), scores, images.shape[1:], min_score))
    return np.stack(out) if out else np.zeros((0, *images.shape[1:]), np.float32)


def mean_pixel_ap(heat: np.ndarray, masks: np.ndarray) -> float:
    """Mean over images of the pixel average precision of the heat map against the mask (scikit-learn's
    ``average_precision_score``, as the utility metric ``ap`` computes it): the model-selection score."""
    if len(masks) == 0:
        return float("nan")
    return float(
        np.mean(
            [average_precision_score(m.reshape(-1) > 0, h.reshape(-1).astype(np.float64)) for h, m in zip(heat, masks)]
        )
    )


# ---------------------------------------------------------------- training


def _scored_positives(data, split: str, label: str) -> np.ndarray:
    """Positive images of ``split`` with a non-empty ground-truth mask of ``label``."""
    li = data.label_index(label)
    idx = data.positive_indices(split, label)
    return idx[data.masks[idx, li].reshape(len(idx), -1).any(axis=1)] if len(idx) else idx


def pixel_moments(data, rows: np.ndarray, block: int = 256) -> tuple[float, float]:
    """Mean and standard deviation of the pixels of ``rows`` (the detector's input normalization): numpy's own
    when the images are in memory, else accumulated block by block in float64."""
    if not data.streamed:
        images = data.images[rows]
        return float(images.mean()), float(images.std())
    total = total_sq = 0.0
    for start in range(0, len(rows), block):
        x = np.asarray(data.images[rows[start : start + block]], dtype=np.float64)
        total, total_sq = total + x.sum(), total_sq + np.square(x).sum()
    n = len(rows) * int(np.prod(data.image_shape))
    mean = total / n
    return float(mean), float(np.sqrt(max(total_sq / n - mean**2, 0.0)))


def train_detector(
    data,
    boxes: pd.DataFrame,
    label: str,
    settings: DetectorSettings,
    seed: int,
    device: torch.device,
    checkpoint: EpochCheckpoint | None = None,
) -> tuple[RetinaNet, pd.DataFrame, dict]:
    """Train one RetinaNet on the boxes of ``label`` (resuming ``checkpoint`` when given); return (best model,
    history, metrics)."""
    torch.manual_seed(seed)
    li = data.label_index(label)
    ids = data.manifest["image_id"].astype(str).to_numpy()
    targets = detector_targets(boxes, label)
    pos = data.positive_indices("train", label)
    pos_boxed = np.array([i for i in pos if ids[i] in targets], dtype=int)
    if len(pos_boxed) < len(pos):
        log.warning(
            "detector: %d positive training image(s) have no '%s' boxes and are not used",
            len(pos) - len(pos_boxed),
            label,
        )
    if len(pos_boxed) == 0:
        raise ValueError(f"no positive training image has boxes of label '{label}' (detector high baseline)")
    tr = pos_boxed
    if not settings.positives_only:
        neg = np.setdiff1d(data.indices("train"), pos)
        tr = np.sort(np.concatenate([pos_boxed, neg]))
    va, te = _scored_positives(data, "val", label), _scored_positives(data, "test", label)
    if len(va) == 0:
        raise ValueError(f"the validation split has no positive image with a '{label}' mask (detector early stopping)")
    mean, std = pixel_moments(data, tr)
    model = build_detector(data.image_shape, settings, mean, max(std, 1e-6)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    empty = np.zeros((0, 4), np.float32)
    gen = torch.Generator().manual_seed(seed)
    loader = training_loader(
        data, tr, settings.batch_size, PermutationSampler(len(tr), gen), device, np.arange(len(tr))
    )
    masks_va = data.masks[va, li]
    stopper = EarlyStopping(settings.patience, "val AP")

    def run_epoch(epoch: int) -> dict:
        t0 = time.perf_counter()
        model.train()
        sums, seen = {"classification": 0.0, "bbox_regression": 0.0}, 0
        for images, positions in loader:
            batch = positions.long().tolist()
            x = [to_device(im, device) for im in images]
            y = [
                {
                    "boxes": torch.from_numpy(targets.get(ids[tr[k]], empty)).to(device),
                    "labels": torch.zeros(len(targets.get(ids[tr[k]], empty)), dtype=torch.int64, device=device),
                }
                for k in batch
            ]
            opt.zero_grad(set_to_none=True)
            losses = model(x, y)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"detector training loss became NaN/inf at epoch {epoch}")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            opt.step()
            for key in sums:
                sums[key] += losses[key].item() * len(x)
            seen += len(x)
        val_heat = predict_heatmaps(model, data.image_rows(va), device, settings.min_score)
        val_ap = mean_pixel_ap(val_heat, masks_va)
        row = {
            "epoch": epoch,
            "train_loss": (sums["classification"] + sums["bbox_regression"]) / seen,
            "train_cls_loss": sums["classification"] / seen,
            "train_box_loss": sums["bbox_regression"] / seen,
            "val_ap": val_ap,
            "seconds": time.perf_counter() - t0,
        }
        log.info(
            "detector epoch %d/%d train_loss %.4f val_ap %.4f (%.1f images/s)",
            epoch,
            settings.epochs,
            row["train_loss"],
            val_ap,
            seen / row["seconds"],
        )
        return row

    history = fit_epochs(model, opt, stopper, settings.epochs, run_epoch, "val_ap", [gen], checkpoint)
    best, best_epoch = stopper.best, stopper.best_epoch
    test_ap = (
        mean_pixel_ap(predict_heatmaps(model, data.image_rows(te), device, settings.min_score), data.masks[te, li])
        if len(te)
        else float("nan")
    )
    metrics = {
        "seed": seed,
        "label": label,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "val_ap": best,
        "test_ap": test_ap,
        "n_train_images": int(len(tr)),
        "n_train_boxes": int(sum(len(targets.get(ids[i], empty)) for i in tr)),
        "image_mean": mean,
        "image_std": max(std, 1e-6),
        "settings": asdict(settings),
    }
    return model, pd.DataFrame(history), metrics


# ---------------------------------------------------------------- stage entries


def run_train_detector(
    manifest_path,
    images_path,
    boxes_path,
    target_label: str | None,
    settings: dict,
    seed: int,
    device: str,
    threads: int,
    model_path,
    history_path,
    metrics_path,
) -> None:
    """Stage entry: train one detector replicate; write model.pt, history.csv, metrics.json atomically."""
    from saliency_trust.data.canonical import dataset_fingerprint, load_dataset
    from saliency_trust.io import sha256_file
    from saliency_trust.models.train import select_device

    torch.set_num_threads(max(int(threads), 1))
    data = load_dataset(manifest_path, images_path)
    label = target_label or data.label_names[0]
    boxes = pd.read_csv(boxes_path, dtype={"image_id": str, "label": str, "rater": str})
    ds = DetectorSettings(**settings)
    checkpoint = EpochCheckpoint(
        model_path,
        {
            "arch": "retinanet",
            "settings": asdict(ds),
            "seed": seed,
            "label": label,
            "boxes": sha256_file(boxes_path),
            "data": dataset_fingerprint(manifest_path, images_path),
        },
    )
    model, history, metrics = train_detector(data, boxes, label, ds, seed, select_device(device), checkpoint)
    log.info(
        "detector: best epoch %d, val AP %.4f, test AP %.4f",
        metrics["best_epoch"],
        metrics["val_ap"],
        metrics["test_ap"],
    )
    save_torch(
        {
            "arch": "retinanet",
            "settings": asdict(ds),
            "label": label,
            "image_shape": list(data.images.shape[1:]),
            "image_mean": metrics["image_mean"],
            "image_std": metrics["image_std"],
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        },
        model_path,
    )
    write_csv(history, history_path)
    write_json(metrics, metrics_path)
    checkpoint.remove()


def load_detector(path, device: torch.device | str = "cpu") -> tuple[RetinaNet, DetectorSettings]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    settings = DetectorSettings(**payload["settings"])
    model = build_detector(tuple(payload["image_shape"]), settings, payload["image_mean"], payload["image_std"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), settings
