"""Shared pieces of the real-dataset adapters (docs/own-data.md).

An adapter reads a dataset's own label tables and returns a :class:`Collection`:
one :class:`Item` per image (its file, labels and localization in the
*original* pixel coordinates) plus the :class:`ItemError` problems found in the
tables. :mod:`saliency_trust.data.adapters.convert` then reads the pixels,
resizes everything to the canonical size and writes the canonical dataset
(docs/own-data.md). Errors name the file, the row (1-based line number of the CSV, the
header being line 1) or the image id, and the config key where one applies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

#: Manifest columns written by every adapter; label names may not reuse them.
RESERVED_COLUMNS = ("image_id", "split", "has_mask", "patient_id", "source_path", "orig_height", "orig_width")
LABEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class ItemError(ValueError):
    """A problem with one image: a malformed row, a missing or unreadable file, a bad annotation.

    ``on_error: raise`` turns it into an exception (``FileNotFoundError`` for
    missing files); ``on_error: skip`` drops the image and records it in
    ``skipped.csv``.
    """

    def __init__(self, image_id: str, where: str, reason: str, missing_file: bool = False):
        self.image_id, self.where, self.reason, self.missing_file = image_id, where, reason, missing_file
        super().__init__(f"{where}: image '{image_id}': {reason}")

    def as_exception(self) -> Exception:
        return FileNotFoundError(str(self)) if self.missing_file else ValueError(str(self))

    def record(self) -> dict:
        return {"image_id": self.image_id, "where": self.where, "reason": self.reason}


@dataclass(frozen=True)
class Shape:
    """A box ``(x, y, width, height)`` or a polygon ``[(x, y), ...]`` of one rater, original pixels.

    Coordinates are continuous: pixel ``(row r, column c)`` covers
    ``[c, c + 1) x [r, r + 1)``.
    """

    label: str
    rater: str
    where: str
    box: tuple[float, float, float, float] | None = None
    polygon: tuple[tuple[float, float], ...] | None = None

    def check_inside(self, height: int, width: int, image_id: str) -> None:
        """Raise :class:`ItemError` if the shape is degenerate or not inside a ``height x width`` image."""
        eps = 1e-6
        if self.box is not None:
            x, y, w, h = self.box
            if not all(math.isfinite(v) for v in self.box) or w <= 0 or h <= 0:
                raise ItemError(image_id, self.where, f"box {self.box} must have finite coordinates and positive size")
            if x < -eps or y < -eps or x + w > width + eps or y + h > height + eps:
                raise ItemError(
                    image_id,
                    self.where,
                    f"box x={x:g}, y={y:g}, width={w:g}, height={h:g} lies outside the {width}x{height} (WxH) image",
                )
        else:
            pts = np.asarray(self.polygon, dtype=float)
            if pts.ndim != 2 or pts.shape[0] < 3 or pts.shape[1] != 2 or not np.isfinite(pts).all():
                raise ItemError(image_id, self.where, "polygon needs at least 3 finite (x, y) points")
            if (pts < -eps).any() or (pts[:, 0] > width + eps).any() or (pts[:, 1] > height + eps).any():
                raise ItemError(image_id, self.where, f"polygon lies outside the {width}x{height} (WxH) image")


@dataclass
class Item:
    """One image of a source dataset, before its pixels are read."""

    image_id: str
    path: Path
    labels: dict[str, int]
    where: str  # table file and row(s), for messages
    patient_id: str | None = None
    shapes: list[Shape] = field(default_factory=list)
    #: pixel masks in original resolution, computed from the image shape: ``(height, width) -> {label: mask}``
    mask_fn: Callable[[tuple[int, int]], dict[str, np.ndarray]] | None = None
    extra: dict[str, object] = field(default_factory=dict)
    listed: str | None = None  # the path as the dataset's table lists it (manifest ``source_path``)


@dataclass
class Collection:
    """What an adapter found in the label tables."""

    label_names: list[str]
    items: list[Item]
    problems: list[ItemError] = field(default_factory=list)
    consensus_min_raters: int = 1
    notes: list[str] = field(default_factory=list)  # documented exclusions, logged


@dataclass(frozen=True)
class Context:
    """Where an adapter reads from and how to name config keys in messages."""

    name: str  # dataset name (config key)
    source: str
    root: Path

    def key(self, *parts: str) -> str:
        return ".".join(["datasets", self.name, *parts])

    def path(self, value: str | Path) -> Path:
        """A config path: absolute, or relative to the dataset root."""
        value = Path(value).expanduser()
        return value if value.is_absolute() else self.root / value


def options_from_config(cls, cfg: dict | None, key: str):
    """Build an options dataclass from a config mapping; unknown keys name the config key."""
    cfg = dict(cfg or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise ValueError(f"{key}: unknown options {unknown}; allowed {sorted(names)}")
    for k, v in cfg.items():  # YAML lists -> tuples for frozen dataclasses
        if isinstance(v, list):
            cfg[k] = tuple(v)
    return cls(**cfg)


def check_label_names(names: list[str], key: str) -> list[str]:
    """Label names become manifest columns: simple identifiers, unique, not reserved."""
    if not names:
        raise ValueError(f"{key}: at least one label is needed")
    for name in names:
        if not isinstance(name, str) or not LABEL_NAME.match(name) or name in RESERVED_COLUMNS:
            raise ValueError(
                f"{key}: label name '{name}' must match {LABEL_NAME.pattern} and not be one of {RESERVED_COLUMNS}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"{key}: duplicate label names {names}")
    return list(names)


def require_file(path: Path, key: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{key}: file '{path}' not found")
    return path


def require_dir(path: Path, key: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{key}: directory '{path}' not found")
    return path


def read_table(
    path: Path, key: str, columns: list[str], header: bool = True, names: list[str] | None = None
) -> pd.DataFrame:
    """Read a CSV as strings (blank cells as ''), with a ``_row`` column holding the file's line number.

    Column names are stripped (SIIM's header is ``ImageId, EncodedPixels``).
    Missing columns raise a ValueError naming the file and the config key.
    """
    require_file(path, key)
    try:
        df = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
            header=0 if header else None,
            names=names,
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"{path} ({key}): not a readable CSV file: {err}") from err
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path} ({key}): missing columns {missing}; found {list(df.columns)}")
    df = df.apply(lambda col: col.str.strip())
    df["_row"] = np.arange(len(df)) + (2 if header else 1)
    return df


def where(path: Path, rows) -> str:
    """``file row 5`` or ``file rows 5, 9`` for messages."""
    rows = [int(r) for r in np.atleast_1d(rows)]
    label = "row" if len(rows) == 1 else "rows"
    shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
    return f"{path.name} {label} {shown}"


def check_unique(ids: pd.Series, rows: pd.Series, path: Path, what: str = "image id") -> None:
    """Duplicate ids stop the run with a ValueError naming the ids and rows."""
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        first = dup.iloc[0]
        dup_rows = rows[ids == first].tolist()
        raise ValueError(
            f"{path}: duplicate {what} '{first}' in rows {dup_rows}"
            + (f" (and {dup.nunique() - 1} more duplicated ids)" if dup.nunique() > 1 else "")
        )


def parse_binary(value: str, image_id: str, at: str, column: str) -> int:
    """A 0/1 label cell (``1``, ``1.0``, ``true``...)."""
    text = str(value).strip().lower()
    if text in ("1", "1.0", "true", "yes"):
        return 1
    if text in ("0", "0.0", "false", "no"):
        return 0
    raise ItemError(image_id, at, f"column '{column}' must be 0 or 1, got '{value}'")


def parse_float(value: str, image_id: str, at: str, column: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ItemError(image_id, at, f"column '{column}' must be a number, got '{value}'") from None
    if not math.isfinite(out):
        raise ItemError(image_id, at, f"column '{column}' must be finite, got '{value}'")
    return out


def resolve_listed(root: Path, listed: str) -> Path:
    """A path listed in a dataset CSV: relative to the root or, as in the official MURA and
    CheXpert CSVs whose paths start with the dataset folder, to its parent."""
    rel = Path(listed)
    if rel.is_absolute():
        return rel
    candidate = root / rel
    if not candidate.exists() and rel.parts and rel.parts[0] == root.name:
        return root.parent / rel
    return candidate


def index_files(folder: Path, suffixes: tuple[str, ...], key: str) -> dict[str, Path]:
    """Map file stem -> path for all files under ``folder`` (recursive); duplicate stems are an error."""
    require_dir(folder, key)
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in suffixes and path.is_file() and not path.name.startswith("."):
            if path.stem in found:
                raise ValueError(f"duplicate image id '{path.stem}': files '{found[path.stem]}' and '{path}' ({key})")
            found[path.stem] = path
    return found


def path_id(listed: str, n_parts: int) -> str:
    """Image id from the last ``n_parts`` components of a listed path, extension dropped, joined by '_'."""
    parts = list(PurePosixPath(listed).with_suffix("").parts[-n_parts:])
    return "_".join(parts)
