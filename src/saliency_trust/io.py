"""Atomic file output and small helpers shared by every stage (SPEC 11).

Every result file is written to a temporary name in the destination folder and
renamed into place only when complete, so a killed job never leaves a file a
later run could mistake for a result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import pandas as pd


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
