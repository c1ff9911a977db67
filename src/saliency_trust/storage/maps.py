"""HDF5 saliency cache (docs/saliency.md).

One file per (dataset, model, method). Layout, readable with plain h5py:

- ``image_id``: N variable-length UTF-8 strings;
- ``map``: N x H x W float32, post-processed to [0, 1] (what metrics score);
- ``raw``: N x C x H x W float32, the unprocessed attribution;
- attributes: ``method``, ``params`` (JSON), ``model_sha256``, ``target``
  (JSON: label and output), ``versions`` (JSON of package versions),
  ``created`` (ISO time, UTC), ``sha256`` (JSON: the SHA-256 of each dataset's
  content, :mod:`saliency_trust.io`), ``constant_maps`` (JSON list of the ids
  whose map is constant, i.e. all zeros after post-processing: such maps are
  scored as they are, logged, and listed in ``summary/constant_maps.csv``).

Datasets are chunked one image per chunk and gzip-compressed. Files are
written atomically. :func:`read_maps` refuses a file whose method, parameters
or model hash differ from what the caller expects, and every reader checks the
content checksum of what it reads (a corrupted file is removed and the job
stops, naming it), so a stale or damaged cache is never silently used:
:func:`load_or_compute_maps` reuses an existing file only when its method,
parameters, target, model hash, package versions and content checksum all
match, and recomputes it (with a warning saying why) otherwise.

Maps of randomized models (docs/criteria.md) live in one file per (model, method,
randomization mode): ``results/{dataset}/saliency/{model}/randomized/{mode}/{method}.h5``,
with the same layout plus leading draw and step axes (``map``: D x S x N x H x W,
``raw``: D x S x N x C x H x W; D seeded re-initialization draws, S steps) and the
attributes ``steps`` (JSON list: the blocks re-initialized at each step) and
``draws`` (JSON list: each draw's re-initialization seed). ``target`` then also
records the randomization (mode, init, seed, draws, blocks), so a change of any of
them recomputes the file. Steps are written one by one, so memory holds one step
of one draw at a time.

XRAI segments live in their own file per dataset
(``results/{dataset}/saliency/xrai_segments.h5``: ``image_id`` and ``labels``,
N x levels x H x W int32 Felzenszwalb label images), because they depend only on
the image and are shared by every model, replicate and randomization step.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from saliency_trust.io import atomic_path, checksum_problem, stamp_checksums, verify_h5

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("saliency-trust", "torch", "captum", "numpy", "h5py", "scikit-image")


def package_versions() -> dict[str, str]:
    out = {}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@dataclass
class SaliencyMaps:
    image_ids: list[str]
    maps: np.ndarray
    raw: np.ndarray
    attrs: dict

    def by_id(self) -> dict[str, np.ndarray]:
        return dict(zip(self.image_ids, self.maps))


def _read_ids(h5: h5py.File) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else str(s) for s in h5["image_id"][:]]


def _write_ids(h5: h5py.File, image_ids: list[str]) -> None:
    h5.create_dataset("image_id", data=np.array(image_ids, dtype=object), dtype=h5py.string_dtype())


def _write_cache_attrs(h5: h5py.File, method: str, params: dict, model_sha256: str, target: dict, **extra) -> None:
    """The attributes :func:`cache_mismatch` checks, plus ``extra`` and the creation time."""
    h5.attrs["method"] = method
    h5.attrs["params"] = json.dumps(params, sort_keys=True)
    h5.attrs["model_sha256"] = model_sha256
    h5.attrs["target"] = json.dumps(target, sort_keys=True)
    h5.attrs["versions"] = json.dumps(package_versions(), sort_keys=True)
    for key, value in extra.items():
        h5.attrs[key] = value
    h5.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    stamp_checksums(h5)


def write_maps(
    path: str | Path,
    image_ids: list[str],
    maps: np.ndarray,
    raw: np.ndarray,
    method: str,
    params: dict,
    model_sha256: str,
    target: dict,
) -> None:
    """Write one cache file atomically; refuses NaN maps, naming the image."""
    if len(image_ids) != len(maps) or len(maps) != len(raw):
        raise ValueError(f"{path}: {len(image_ids)} ids, {len(maps)} maps and {len(raw)} raw attributions")
    _check_finite(maps, image_ids, method)
    constant = constant_ids(maps, image_ids, f"{path}: {method}")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            _write_ids(h5, image_ids)
            h5.create_dataset("map", data=maps.astype(np.float32), chunks=(1, *maps.shape[1:]), compression="gzip")
            h5.create_dataset("raw", data=raw.astype(np.float32), chunks=(1, *raw.shape[1:]), compression="gzip")
            _write_cache_attrs(h5, method, params, model_sha256, target, constant_maps=json.dumps(constant))


def read_maps(
    path: str | Path,
    method: str | None = None,
    params: dict | None = None,
    model_sha256: str | None = None,
    with_raw: bool = False,
) -> SaliencyMaps:
    """Read a cache file; raise ValueError if it does not match the expected method/params/model."""
    with h5py.File(path, "r") as h5:
        attrs = {k: h5.attrs[k] for k in h5.attrs}
        if method is not None and attrs["method"] != method:
            raise ValueError(f"{path}: holds method '{attrs['method']}', expected '{method}'")
        if params is not None and json.loads(attrs["params"]) != json.loads(json.dumps(params)):
            raise ValueError(
                f"{path}: computed with params {attrs['params']}, expected {json.dumps(params, sort_keys=True)}"
            )
        if model_sha256 is not None and attrs["model_sha256"] != model_sha256:
            raise ValueError(f"{path}: computed from another model checkpoint (hash mismatch)")
        ids = _read_ids(h5)
        maps = h5["map"][:]
        raw = h5["raw"][:] if with_raw else np.empty((0,))
        verify_h5(path, h5, {"image_id": ids, "map": maps, **({"raw": raw} if with_raw else {})})
    return SaliencyMaps(ids, maps, raw, attrs)


def cache_mismatch(
    path: str | Path, method: str, params: dict, model_sha256: str, target: dict, image_ids: list[str] | None = None
) -> str | None:
    """Why an existing cache file cannot be reused (None when it can); ``image_ids``, when given, must match too."""
    try:
        with h5py.File(path, "r") as h5:
            attrs = {k: h5.attrs[k] for k in h5.attrs}
            n_ok = len(h5["image_id"]) == h5["map"].shape[-3] == h5["raw"].shape[-4]
            stored_ids = _read_ids(h5)
            corrupt = checksum_problem(h5)
    except (OSError, KeyError) as err:
        return f"unreadable ({err})"
    expected = {
        "method": method,
        "params": json.dumps(params, sort_keys=True),
        "model_sha256": model_sha256,
        "target": json.dumps(target, sort_keys=True),
        "versions": json.dumps(package_versions(), sort_keys=True),
    }
    for key, value in expected.items():
        if attrs.get(key) != value:
            return f"{key} differs (cached {attrs.get(key)!r}, expected {value!r})"
    if image_ids is not None and stored_ids != list(image_ids):
        return "the images differ"
    if corrupt:
        return f"corrupted: {corrupt}"
    return None if n_ok else "inconsistent datasets"


def load_or_compute_maps(
    path: str | Path,
    method: str,
    params: dict,
    model_sha256: str,
    target: dict,
    compute: Callable[[], tuple[list[str], np.ndarray, np.ndarray]],
) -> bool:
    """Reuse ``path`` if it matches exactly; else call ``compute()`` -> (ids, maps, raw) and write it.

    Returns True when the maps were (re)computed.
    """
    path = Path(path)
    if path.exists():
        why = cache_mismatch(path, method, params, model_sha256, target)
        if why is None:
            log.info("%s: cache matches (method, params, model, versions); reused", path)
            return False
        log.warning("%s: cache not reused, %s; recomputing", path, why)
    ids, maps, raw = compute()
    write_maps(path, ids, maps, raw, method, params, model_sha256, target)
    return True


def constant_ids(maps: np.ndarray, image_ids: list[str], what: str) -> list[str]:
    """Ids of the constant maps (all zeros once post-processed), logged as a warning naming the first."""
    flat = maps.reshape(len(maps), -1)
    ids = [image_ids[k] for k in np.flatnonzero(flat.max(axis=1) == flat.min(axis=1))]
    if ids:
        log.warning(
            "%s: %d constant map(s), scored as all-zero maps and listed in summary/constant_maps.csv; e.g. image '%s'",
            what,
            len(ids),
            ids[0],
        )
    return ids


def constant_maps_table(paths: list[str | Path]) -> pd.DataFrame:
    """One row per constant map recorded by the cache files (``file, method, draw, step, block, image_id``;
    draw, step and block are empty for trained models' maps)."""
    import pandas as pd

    rows = []
    for path in paths:
        with h5py.File(path, "r") as h5:
            method, steps = h5.attrs["method"], json.loads(h5.attrs.get("steps", "null"))
            for entry in json.loads(h5.attrs.get("constant_maps", "[]")):
                step, image_id, draw = entry if steps else (None, entry, None)  # randomized: [step, id, draw]
                rows.append((str(path), method, draw, step, steps[step - 1] if steps else None, image_id))
    return pd.DataFrame(rows, columns=["file", "method", "draw", "step", "block", "image_id"]).astype(
        {"draw": "Int64", "step": "Int64"}
    )


def run_constant_maps(paths: list[str], out_path) -> None:
    """Stage entry: the table of constant maps of a dataset's caches (docs/troubleshooting.md: nothing silent)."""
    from saliency_trust.io import write_csv

    table = constant_maps_table(paths)
    log.info("%d constant map(s) in %d cache files", len(table), len(paths))
    write_csv(table, out_path)


def _check_finite(maps: np.ndarray, image_ids: list[str], what: str) -> None:
    bad = ~np.isfinite(maps.reshape(len(maps), -1)).all(axis=1)
    if bad.any():
        raise FloatingPointError(f"{what}: map of image '{image_ids[int(np.argmax(bad))]}' contains NaN/inf")


def load_or_compute_randomized(
    path: str | Path,
    method: str,
    params: dict,
    model_sha256: str,
    target: dict,
    image_ids: list[str],
    steps: list[str],
    compute_step: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
    draws: list[int] | None = None,
) -> bool:
    """Reuse ``path`` if it matches exactly; else write the maps of every draw and step,
    ``compute_step(d, k)`` -> (maps, raw) of draw ``d`` and step ``k`` (0-based). ``draws``: the draws'
    re-initialization seeds (one draw, seed 0, when None).

    Returns True when the maps were (re)computed.
    """
    path = Path(path)
    draws = [0] if draws is None else [int(d) for d in draws]
    target = {**target, "steps": list(steps), "draws": draws}
    if path.exists():
        why = cache_mismatch(path, method, params, model_sha256, target, image_ids)
        if why is None:
            log.info("%s: cache matches (method, params, model, randomization, images, versions); reused", path)
            return False
        log.warning("%s: cache not reused, %s; recomputing", path, why)
    constant: list[tuple[int, str]] = []
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            _write_ids(h5, image_ids)
            dsets = None
            for d in range(len(draws)):
                for k, block in enumerate(steps):
                    what = f"step {k + 1} ({block}), draw {d + 1}"
                    maps, raw = compute_step(d, k)
                    if not len(maps) == len(raw) == len(image_ids):
                        raise ValueError(
                            f"{path}: {what} gave {len(maps)} maps and {len(raw)} raw attributions "
                            f"for {len(image_ids)} images"
                        )
                    _check_finite(maps, image_ids, f"{method}, randomization {what}")
                    constant += [(k + 1, i, d + 1) for i in constant_ids(maps, image_ids, f"{path}: {what}")]
                    if dsets is None:
                        dsets = [
                            h5.create_dataset(
                                name,
                                shape=(len(draws), len(steps), *arr.shape),
                                dtype="f4",
                                chunks=(1, 1, 1, *arr.shape[1:]),
                                compression="gzip",
                            )
                            for name, arr in (("map", maps), ("raw", raw))
                        ]
                    dsets[0][d, k] = maps
                    dsets[1][d, k] = raw
            _write_cache_attrs(
                h5,
                method,
                params,
                model_sha256,
                target,
                steps=json.dumps(list(steps)),
                draws=json.dumps(draws),
                constant_maps=json.dumps(constant),
            )
    return True


def read_randomized_maps(
    path: str | Path, method: str | None = None, dataset: str = "map"
) -> tuple[list[str], list[str], np.ndarray]:
    """(image ids, step block names, D x S x N x H x W maps: draws x steps x images) of a randomized-model cache
    file; ``dataset="raw"`` returns the D x S x N x C x H x W raw attributions instead."""
    if dataset not in ("map", "raw"):
        raise ValueError(f"unknown cache dataset '{dataset}' (map or raw)")
    with h5py.File(path, "r") as h5:
        if method is not None and h5.attrs["method"] != method:
            raise ValueError(f"{path}: holds method '{h5.attrs['method']}', expected '{method}'")
        ids = _read_ids(h5)
        steps = json.loads(h5.attrs["steps"])
        maps = h5[dataset][:]
        verify_h5(path, h5, {"image_id": ids, dataset: maps})
    return ids, steps, maps


def write_segments(path: str | Path, image_ids: list[str], labels: np.ndarray, params: dict | None = None) -> None:
    """Write XRAI segment label images (N x levels x H x W) atomically; ``params`` (the segmentation's
    settings, :func:`saliency_trust.saliency.xrai.segment_params`) are stored as JSON attributes."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            _write_ids(h5, image_ids)
            h5.create_dataset("labels", data=labels.astype(np.int32), chunks=(1, *labels.shape[1:]), compression="gzip")
            for key, value in (params or {}).items():
                h5.attrs[key] = json.dumps(value)
            h5.attrs["versions"] = json.dumps(package_versions(), sort_keys=True)
            stamp_checksums(h5)


def read_segments(path: str | Path, image_ids: list[str]) -> np.ndarray:
    """Label images of the given images, in that order; names a missing image."""
    with h5py.File(path, "r") as h5:
        stored = _read_ids(h5)
        labels = h5["labels"][:]
        verify_h5(path, h5, {"image_id": stored, "labels": labels})
        index = {i: k for k, i in enumerate(stored)}
        missing = [i for i in image_ids if i not in index]
        if missing:
            raise KeyError(f"{path}: no XRAI segments for image '{missing[0]}'")
    return labels[[index[i] for i in image_ids]]


def read_cached_ids(path: str | Path) -> list[str]:
    """The image ids of a cache file (trained or randomized), without reading its maps."""
    with h5py.File(path, "r") as h5:
        ids = _read_ids(h5)
        verify_h5(path, h5, {"image_id": ids})
    return ids


def read_steps(path: str | Path) -> list[str]:
    """The blocks re-initialized at each step of a randomized-model cache file, without reading its maps."""
    with h5py.File(path, "r") as h5:
        return json.loads(h5.attrs["steps"])


def read_maps_of(path: str | Path, image_ids: list[str]) -> np.ndarray:
    """Only the maps of ``image_ids`` (in that order): K x H x W, or D x S x K x H x W for a randomized-model file.
    A KeyError names an id the file lacks."""
    with h5py.File(path, "r") as h5:
        stored = _read_ids(h5)
        verify_h5(path, h5, {"image_id": stored})  # the maps themselves are read in part: not verified
        position = {i: k for k, i in enumerate(stored)}
        missing = [i for i in image_ids if i not in position]
        if missing:
            raise KeyError(f"{path}: no map of image(s) {missing[:5]}")
        rows = np.asarray([position[i] for i in image_ids], dtype=int)
        order = np.argsort(rows)
        stepped = "steps" in h5.attrs
        data = h5["map"][:, :, rows[order]] if stepped else h5["map"][rows[order]]
    back = np.argsort(order)
    return data[:, :, back] if stepped else data[back]
