"""Atomic file output, HDF5 content checksums and small helpers shared by every stage (docs/troubleshooting.md).

Every result file is written to a temporary name in the destination folder and
renamed into place only when complete, so a killed job never leaves a file a
later run could mistake for a result; the temporary file a killed job left
behind is removed by the next write of the same file.

Every HDF5 file the pipeline writes (canonical images, saliency caches, XRAI
segments) carries the attribute ``sha256``: JSON ``{dataset name: SHA-256 of its
content}`` (dtype, shape and the values in C order, independent of chunking and
compression). Readers recompute it for what they read; a mismatch means the file
was damaged after it was written: :func:`verify_h5` removes it (so that the next
``snakemake`` run recomputes it) and raises :class:`CorruptFileError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
CHECKSUM_ATTR = "sha256"
#: How this process reads canonical images (config ``storage``; docs/scaling.md): set once per job.
STORAGE_DEFAULTS = {"in_memory_mb": 256.0, "loader_workers": 2}
_storage = dict(STORAGE_DEFAULTS)


def configure_storage(options: dict) -> None:
    """Set the job's ``storage.in_memory_mb`` and ``storage.loader_workers`` (missing keys: the defaults)."""
    _storage.clear()
    _storage.update(STORAGE_DEFAULTS)
    _storage.update({k: v for k, v in options.items() if k in STORAGE_DEFAULTS})


def storage_option(name: str):
    """The job's value of one ``storage`` option."""
    return _storage[name]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed job (one writer per file)
        log.info("removing %s, left by an interrupted job", stale)
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes the file private (0600); give it the mode a plain open() would
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table atomically as CSV without the index."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(obj: object, path: str | os.PathLike) -> None:
    """Write JSON atomically (sorted keys, so identical content gives identical bytes)."""
    write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


class Progress:
    """Logs ``what: done/total unit (rate unit/s)`` for a long step: at most every ``every`` seconds, and at the end."""

    def __init__(self, what: str, total: int, unit: str = "images", every: float = 10.0, logger: logging.Logger = log):
        import time

        self.what, self.total, self.unit, self.every, self.clock = what, total, unit, every, time.perf_counter
        self.logger = logger
        self.start = self.last = self.clock()

    def update(self, done: int) -> None:
        now = self.clock()
        if done >= self.total or now - self.last >= self.every:
            self.last = now
            self.logger.info(
                "%s: %d/%d %s (%.1f %s/s)",
                self.what,
                done,
                self.total,
                self.unit,
                done / max(now - self.start, 1e-9),
                self.unit,
            )


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def stable_seed(*parts: object) -> int:
    """A 32-bit seed derived from the config seed and names (stable across runs and machines)."""
    text = ":".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def concat_csv(paths: list[str | os.PathLike], out: str | os.PathLike) -> None:
    """Concatenate tidy CSV tables with identical columns (atomic write)."""
    frames = [pd.read_csv(p, dtype={"image_id": str}) for p in paths]
    columns = list(frames[0].columns)
    for path, frame in zip(paths, frames):
        if list(frame.columns) != columns:
            raise ValueError(f"{path}: columns {list(frame.columns)} differ from {columns}")
    write_csv(pd.concat(frames, ignore_index=True), out)


class CorruptFileError(ValueError):
    """An HDF5 file whose content does not match the checksum it was written with."""


def _content_digest(dtype: np.dtype, shape: tuple, blocks) -> str:
    digest = hashlib.sha256(f"{np.dtype(dtype).str}{tuple(shape)}".encode())
    for block in blocks:
        if block.dtype.kind in "OSU":  # strings: UTF-8, NUL-separated
            digest.update(b"\0".join(v.encode() if isinstance(v, str) else bytes(v) for v in block.ravel()) + b"\0")
        else:
            digest.update(memoryview(np.ascontiguousarray(block)).cast("B"))
    return digest.hexdigest()


def array_sha256(arr: np.ndarray | list) -> str:
    """SHA-256 of an array's content (as :func:`dataset_sha256` of an HDF5 dataset holding it)."""
    arr = np.asarray(arr, dtype=object) if isinstance(arr, list) else arr
    kind = "O" if arr.dtype.kind in "OSU" else arr.dtype
    return _content_digest(kind, arr.shape, [arr])


def dataset_sha256(dset: h5py.Dataset, rows: int = 64) -> str:
    """SHA-256 of an HDF5 dataset's content, read ``rows`` entries of the first axis at a time."""
    if dset.dtype.kind in "OS":
        return _content_digest("O", dset.shape, [dset[()]])
    if dset.ndim == 0:
        return _content_digest(dset.dtype, (), [np.asarray(dset[()])])
    return _content_digest(dset.dtype, dset.shape, (dset[i : i + rows] for i in range(0, len(dset), rows)))


def stamp_checksums(h5: h5py.File, names: list[str] | None = None) -> None:
    """Store the checksum of every top-level dataset (or of ``names``) of a file being written (call last, before
    closing). The canonical image store stamps its small datasets only: its images carry one checksum each."""
    sums = {
        name: dataset_sha256(obj)
        for name, obj in h5.items()
        if isinstance(obj, h5py.Dataset) and (names is None or name in names)
    }
    h5.attrs[CHECKSUM_ATTR] = json.dumps(sums, sort_keys=True)


def checksum_problem(h5: h5py.File, arrays: dict[str, np.ndarray | list] | None = None) -> str | None:
    """Why the content does not match the stored checksums (None when it does).

    ``arrays`` are datasets already read (name -> values), checked without reading them again;
    without it every dataset of the file is read and checked.
    """
    if CHECKSUM_ATTR not in h5.attrs:
        return "it has no content checksum (written by an older version)"
    stored = json.loads(h5.attrs[CHECKSUM_ATTR])
    names = (
        list(arrays)
        if arrays is not None
        else sorted(set(stored) | {n for n, o in h5.items() if isinstance(o, h5py.Dataset)})
    )
    for name in names:
        actual = array_sha256(arrays[name]) if arrays is not None else dataset_sha256(h5[name])
        if stored.get(name) != actual:
            return f"the content of '{name}' does not match its checksum"
    return None


def verify_h5(path: str | os.PathLike, h5: h5py.File, arrays: dict[str, np.ndarray | list]) -> None:
    """Check datasets already read from ``path`` against its checksums.

    A mismatch removes the file, so that the next run recomputes it, and raises :class:`CorruptFileError`;
    a file without checksums (an older version's) is used with a warning.
    """
    why = checksum_problem(h5, arrays)
    if why is None:
        return
    if CHECKSUM_ATTR not in h5.attrs:
        log.warning("%s: %s; its content is not verified", path, why)
        return
    Path(path).unlink(missing_ok=True)
    log.warning("%s: %s: the file is corrupted and has been removed", path, why)
    raise CorruptFileError(
        f"{path}: {why}: the file is corrupted. It has been removed; run snakemake again and it is recomputed"
    )


def row_sha256(block: np.ndarray) -> list[bytes]:
    """SHA-256 (hex, as bytes) of each row of an array's stored bytes: the per-image checksums of the files read
    in part (canonical images and masks, XRAI segments)."""
    return [hashlib.sha256(np.ascontiguousarray(row).tobytes()).hexdigest().encode() for row in block]


def verify_rows(path: str | os.PathLike, name: str, rows, block: np.ndarray, sums: np.ndarray) -> None:
    """Check rows read from ``path`` (``block``, rows ``rows`` of dataset ``name``) against their stored
    checksums ``sums`` (all rows'). A mismatch removes the file and raises :class:`CorruptFileError`."""
    for row, digest in zip(rows, row_sha256(block)):
        if digest != sums[int(row)]:
            Path(path).unlink(missing_ok=True)
            log.warning("%s: row %d of '%s' is damaged: the file is corrupted and has been removed", path, row, name)
            raise CorruptFileError(
                f"{path}: the content of '{name}' does not match its checksum (row {row}): the file is corrupted. "
                "It has been removed; run snakemake again and it is recomputed"
            )
