"""Training batches read from the canonical dataset (docs/scaling.md).

One loader serves the classifiers, the U-Net and the detector. When the
dataset is in memory (:func:`saliency_trust.data.canonical.load_dataset` under
``storage.in_memory_mb``) the batches come from tensors, as they always did.
When it is streamed, a :class:`RowsDataset` reads each image (and mask) from
the HDF5 file as the sampler asks for it, in ``storage.loader_workers`` worker
processes that each open their own file handle, with pinned memory on CUDA so
that the copy to the GPU does not block. The sampler (and so the order and the
composition of the batches) lives in the training process and the reads are
deterministic, so both paths give the same batches, bit for bit; augmentation
is applied on the fly to each batch by the trainer.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from saliency_trust.io import storage_option


class RowsDataset(Dataset):
    """Items of some rows of a canonical dataset: ``(image 1 x H x W, target)``; the target is the row's entry of
    ``labels`` (one entry per selected row: its labels, or its position for the detector's boxes) or its mask of
    label ``mask_label`` (1 x H x W float32)."""

    def __init__(self, images, rows, labels: np.ndarray | None = None, masks=None, mask_label: int | None = None):
        if (labels is None) == (masks is None):
            raise ValueError("RowsDataset needs either labels or masks as targets")
        self.images, self.rows, self.labels = images, np.asarray(rows, dtype=np.int64), labels
        self.masks, self.mask_label = masks, mask_label

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = int(self.rows[i])
        x = torch.from_numpy(np.ascontiguousarray(self.images[row], dtype=np.float32)).unsqueeze(0)
        if self.labels is not None:
            return x, torch.from_numpy(np.asarray(self.labels[i], dtype=np.float32))
        y = np.asarray(self.masks[row, self.mask_label], dtype=np.float32)
        return x, torch.from_numpy(np.ascontiguousarray(y)).unsqueeze(0)


class PermutationSampler(Sampler):
    """Every row once per epoch, in the order of one ``torch.randperm`` drawn from ``generator`` (exactly one
    draw per epoch, so a resumed training continues the same sequence)."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


def training_loader(
    data,
    rows: np.ndarray,
    batch_size: int,
    sampler: Sampler,
    device: torch.device,
    labels: np.ndarray | None = None,
    mask_label: int | None = None,
) -> DataLoader:
    """Batches of ``(x, target)`` of ``rows`` of ``data`` in the order of ``sampler``: tensors in memory when the
    dataset is, else a :class:`RowsDataset` read by ``storage.loader_workers`` workers (see the module)."""
    if not data.streamed:
        x = torch.from_numpy(np.asarray(data.images[rows], dtype=np.float32)).unsqueeze(1)
        if labels is not None:
            target = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        else:
            target = torch.from_numpy(np.asarray(data.masks[rows, mask_label], dtype=np.float32)).unsqueeze(1)
        return DataLoader(TensorDataset(x, target), batch_size=batch_size, sampler=sampler)
    workers = int(storage_option("loader_workers"))
    dataset = RowsDataset(data.images, rows, labels, None if labels is not None else data.masks, mask_label)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if workers else None,
    )


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on the training device; non-blocking from pinned memory on CUDA."""
    return batch.to(device, non_blocking=device.type == "cuda")
