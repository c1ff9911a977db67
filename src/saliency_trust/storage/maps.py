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
stops, naming it), so a stale or damaged cache is never silently used.

A job writes its file from scratch (Snakemake removes a rerun job's outputs),
taking each image's map from the :class:`MapStore` where it holds it:
:func:`compute_maps` and :func:`compute_randomized_maps` compute only the
images the store lacks (docs/new-data.md).

Maps of randomized models (docs/criteria.md) live in one file per (model, method,
randomization mode): ``results/{dataset}/saliency/{model}/randomized/{mode}/{method}.h5``,
with the same layout plus leading draw and step axes (``map``: D x S x N x H x W,
``raw``: D x S x N x C x H x W; D seeded re-initialization draws, S steps) and the
attributes ``steps`` (JSON list: the blocks re-initialized at each step) and
``draws`` (JSON list: each draw's re-initialization seed). ``target`` then also
records the randomization (mode, init, seed, draws, blocks); a rerun writes the
file again, taking from the :class:`MapStore` the maps of the draws, steps and
images it holds. Steps are written one by one, so memory holds one step
of one draw at a time.

XRAI segments live in their own file per dataset
(``results/{dataset}/saliency/xrai_segments.h5``: ``image_id`` and ``labels``,
N x levels x H x W int32 Felzenszwalb label images), because they depend only on
the image and are shared by every model, replicate and randomization step.
"""

from __future__ import annotations

import hashlib
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

from saliency_trust.io import atomic_path, row_sha256, stamp_checksums, verify_h5, verify_rows

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
    """The attributes :func:`read_maps` checks, plus ``extra``, the package versions and the creation time."""
    h5.attrs["method"] = method
    h5.attrs["params"] = json.dumps(params, sort_keys=True)
    h5.attrs["model_sha256"] = model_sha256
    h5.attrs["target"] = json.dumps(target, sort_keys=True)
    h5.attrs["versions"] = json.dumps(package_versions(), sort_keys=True)
    for key, value in extra.items():
        h5.attrs[key] = value
    h5.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    stamp_checksums(h5)


class MapWriter:
    """A cache file written a batch at a time (memory holds one batch): rows in any order, each checked for
    NaN; :meth:`finish` records the constant maps, the attributes and the checksums. Use as a context manager:
    the file is renamed into place on success, and an exception leaves no file behind."""

    def __init__(self, path: str | Path, image_ids: list[str]):
        self.path, self.image_ids = Path(path), list(image_ids)
        self.written = np.zeros(len(self.image_ids), bool)
        self.constant = np.zeros(len(self.image_ids), bool)
        self.sums = np.zeros(len(self.image_ids), "S64")  # per-map checksums: files read in part are verified
        self._atomic, self._h5 = None, None

    def __enter__(self) -> MapWriter:
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._h5 = h5py.File(tmp, "w")
        _write_ids(self._h5, self.image_ids)
        return self

    def write(self, rows, maps: np.ndarray, raw: np.ndarray, what: str = "") -> None:
        """Maps (K x H x W) and raw attributions (K x C x H x W) of the images at positions ``rows``."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not len(rows) == len(maps) == len(raw):
            raise ValueError(f"{self.path}: {len(rows)} images, {len(maps)} maps and {len(raw)} raw attributions")
        _check_finite(maps, [self.image_ids[k] for k in rows], what or str(self.path))
        if "map" not in self._h5:
            n = len(self.image_ids)
            for name, arr in (("map", maps), ("raw", raw)):
                shape = tuple(np.shape(arr)[1:])
                self._h5.create_dataset(name, (n, *shape), np.float32, chunks=(1, *shape), compression="gzip")
        if not len(rows):
            return
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        maps32, raw32 = np.asarray(maps, np.float32)[order], np.asarray(raw, np.float32)[order]
        if sorted_rows[-1] - sorted_rows[0] + 1 == len(rows):  # contiguous: one write
            block = slice(int(sorted_rows[0]), int(sorted_rows[-1]) + 1)
            self._h5["map"][block] = maps32
            self._h5["raw"][block] = raw32
        else:
            for k, row in enumerate(sorted_rows):
                self._h5["map"][int(row)] = maps32[k]
                self._h5["raw"][int(row)] = raw32[k]
        self.sums[sorted_rows] = row_sha256(maps32)
        flat = np.asarray(maps).reshape(len(maps), -1)
        self.constant[rows] = flat.max(axis=1) == flat.min(axis=1)
        self.written[rows] = True

    def finish(self, method: str, params: dict, model_sha256: str, target: dict, **extra) -> None:
        if not self.written.all():
            missing = self.image_ids[int(np.argmin(self.written))]
            raise ValueError(f"{self.path}: no map was written for image '{missing}'")
        constant = [self.image_ids[k] for k in np.flatnonzero(self.constant)]
        if constant:
            log.warning(
                "%s: %s: %d constant map(s), scored as all-zero maps and listed in summary/constant_maps.csv; "
                "e.g. image '%s'",
                self.path,
                method,
                len(constant),
                constant[0],
            )
        self._h5.create_dataset("map_sha256", data=self.sums)
        _write_cache_attrs(self._h5, method, params, model_sha256, target, constant_maps=json.dumps(constant), **extra)

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._h5.close()
        if exc_type is None:
            self._atomic.__exit__(None, None, None)
            return False
        return bool(self._atomic.__exit__(exc_type, exc, tb))


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
    with MapWriter(path, image_ids) as writer:
        writer.write(np.arange(len(image_ids)), maps, raw, method)
        writer.finish(method, params, model_sha256, target)


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


def image_key(image_id: str, image: np.ndarray) -> str:
    """Content key of one explained image: SHA-256 of its id (SmoothGrad's noise is seeded by the id) and of its
    pixels as float32."""
    digest = hashlib.sha256(str(image_id).encode() + b"\0")
    digest.update(np.ascontiguousarray(image, dtype=np.float32).tobytes())
    return digest.hexdigest()


class MapStore:
    """Saliency maps of single images kept across reruns (docs/new-data.md).

    Snakemake removes a job's outputs before it runs the job again, so a cache file cannot be reused in place.
    The store lives beside the outputs (``results/{dataset}/store/maps/``), one HDF5 file per method,
    parameters, model SHA-256, target and package versions (the file name holds their digest: a change of any
    of them opens another file, so nothing stale is ever read). Inside, one group per entry (an image's
    :func:`image_key`, under ``draw<seed>/step<k>-<blocks>/`` for a randomized model) holds ``map``, ``raw``
    and their SHA-256. Entries are saved batch by batch, so a killed job keeps its finished batches; a damaged
    entry is computed again, an unreadable file is removed with a warning. Deleting the folder loses only reuse.
    """

    def __init__(self, root: str | Path, method: str, params: dict, model_sha256: str, target: dict):
        self.fields = {
            "method": method,
            "params": params,
            "model_sha256": model_sha256,
            "target": target,
            "versions": package_versions(),
            "code": source_digest(),
        }
        self.usable = True  # False once the file was found locked by another process: nothing is saved then
        key = hashlib.sha256(json.dumps(self.fields, sort_keys=True).encode()).hexdigest()
        self.path = Path(root) / f"{method}-{key[:24]}.h5"

    def held(self, entries: list[str]) -> set[str]:
        """The entries the store has (not read nor verified: :meth:`load` does that)."""
        if not self.path.exists():
            return set()
        try:
            with h5py.File(self.path, "r") as h5:
                return {entry for entry in entries if entry in h5}
        except OSError as err:
            if "lock" in str(err).lower():
                log.warning("%s: locked by another process (%s); maps computed, not stored", self.path, err)
                self.usable = False
                return set()
            log.warning("%s: unreadable (%s); removed, its maps are computed again", self.path, err)
            self.path.unlink(missing_ok=True)
            return set()

    def load(self, entries: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(map, raw) of each entry the store holds intact."""
        if not self.path.exists():
            return {}
        found = {}
        try:
            with h5py.File(self.path, "r") as h5:
                for entry in entries:
                    if entry not in h5:
                        continue
                    try:
                        group = h5[entry]
                        pair = (group["map"][:], group["raw"][:])
                        intact = group.attrs.get("sha256") == _pair_sha256(*pair)
                    except (KeyError, OSError):
                        intact = False
                    if intact:
                        found[entry] = pair
                    else:
                        log.warning("%s: entry %s is damaged; computed again", self.path, entry)
        except OSError as err:
            if "lock" in str(err).lower():  # another process writes it (HDF5 file locking): not damaged
                log.warning("%s: locked by another process (%s); maps computed, not stored", self.path, err)
                self.usable = False
                return {}
            log.warning("%s: unreadable (%s); removed, its maps are computed again", self.path, err)
            self.path.unlink(missing_ok=True)
            return {}
        return found

    def save(self, entries: list[str], maps: np.ndarray, raw: np.ndarray) -> None:
        """Add (or replace) entries, one map and raw attribution each."""
        if not self.usable:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(self.path, "a") as h5:
            h5.attrs["fields"] = json.dumps(self.fields, sort_keys=True)
            for entry, m, r in zip(entries, maps, raw, strict=True):
                if entry in h5:
                    del h5[entry]
                group = h5.create_group(entry)
                group.create_dataset("map", data=m.astype(np.float32), compression="gzip")
                group.create_dataset("raw", data=r.astype(np.float32), compression="gzip")
                group.attrs["sha256"] = _pair_sha256(m.astype(np.float32), r.astype(np.float32))


def source_digest() -> str:
    """SHA-256 of the source files of the saliency and model modules: an edited method, post-processing or
    architecture opens another store file, even in an editable install whose version does not change."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted([*root.glob("saliency/**/*.py"), *root.glob("models/**/*.py")]):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _pair_sha256(m: np.ndarray, r: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(m).tobytes() + np.ascontiguousarray(r).tobytes()).hexdigest()


def _from_store_or_compute(
    store: MapStore | None,
    entries: list[str],
    image_ids: list[str],
    compute: Callable[[list[int]], tuple[np.ndarray, np.ndarray]],
    batch_size: int,
    what: str,
    progress_name: str | None = None,
    sink: Callable[[list[int], np.ndarray, np.ndarray], None] | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """(maps, raw, number computed) of every entry: those the store holds, the others computed by
    ``compute(indices)`` batch by batch, each batch checked and saved to the store as soon as it is done;
    ``progress_name``: log ``<name>: k/n images (rate)`` after each batch. With ``sink``, every batch (computed
    or read from the store) goes to ``sink(indices, maps, raw)`` instead and (None, None, computed) is returned:
    memory then holds one batch."""
    from saliency_trust.io import Progress

    step = max(int(batch_size), 1)
    if not entries:
        maps, raw = compute([])
        if sink is not None:
            sink([], maps, raw)
            return None, None, 0
        return maps, raw, 0
    held = store.held(entries) if store is not None else set()
    kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    damaged = []  # held entries found damaged when read: computed again
    reused = [k for k, entry in enumerate(entries) if entry in held]
    for start in range(0, len(reused), step):
        rows = reused[start : start + step]
        found = store.load([entries[k] for k in rows])
        damaged += [k for k in rows if entries[k] not in found]
        rows = [k for k in rows if entries[k] in found]
        if rows and sink is not None:
            sink(rows, np.stack([found[entries[k]][0] for k in rows]), np.stack([found[entries[k]][1] for k in rows]))
        elif rows:
            kept.update({k: found[entries[k]] for k in rows})
    missing = sorted([k for k, entry in enumerate(entries) if entry not in held] + damaged)
    progress = Progress(progress_name, len(missing), every=0.0, logger=log) if progress_name else None
    for start in range(0, len(missing), step):
        rows = missing[start : start + step]
        maps, raw = compute(rows)
        if not len(maps) == len(raw) == len(rows):
            raise ValueError(f"{what}: {len(maps)} maps and {len(raw)} raw attributions for {len(rows)} images")
        _check_finite(maps, [image_ids[k] for k in rows], what)
        if store is not None:
            store.save([entries[k] for k in rows], maps, raw)
        if sink is not None:
            sink(rows, maps, raw)
        else:
            kept.update({k: (m, r) for k, m, r in zip(rows, maps, raw)})
        if progress is not None:
            progress.update(start + len(rows))
    log.info(
        "%s: %d of %d maps reused from the store, %d computed",
        what,
        len(entries) - len(missing),
        len(entries),
        len(missing),
    )
    if sink is not None:
        return None, None, len(missing)
    return (
        np.stack([kept[k][0] for k in range(len(entries))]).astype(np.float32),
        np.stack([kept[k][1] for k in range(len(entries))]).astype(np.float32),
        len(missing),
    )


def compute_maps(
    path: str | Path,
    method: str,
    params: dict,
    model_sha256: str,
    target: dict,
    image_ids: list[str],
    image_keys: list[str],
    compute: Callable[[list[int]], tuple[np.ndarray, np.ndarray]],
    store: MapStore | None = None,
    batch_size: int = 16,
    progress_name: str | None = None,
) -> int:
    """Write the cache file of every image's map: reused from ``store`` (:class:`MapStore`) where it holds the
    image (``image_keys``: :func:`image_key`), else ``compute(indices)`` -> (maps, raw) of those images. Each
    batch goes to the file as soon as it is done, so memory holds one batch (docs/scaling.md).

    Returns the number of maps computed."""
    what = f"{path}: {method}"
    with MapWriter(path, image_ids) as writer:
        _, _, computed = _from_store_or_compute(
            store,
            image_keys,
            image_ids,
            compute,
            batch_size,
            what,
            progress_name,
            sink=lambda rows, maps, raw: writer.write(rows, maps, raw, what),
        )
        writer.finish(method, params, model_sha256, target)
    return computed


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


def randomized_store_target(target: dict) -> dict:
    """What a randomized model's maps depend on, for the store: the target without the randomization's image
    subset (``n_images``); draws and steps are in the entries' names, so more draws or images reuse the rest."""
    randomization = {k: v for k, v in target.get("randomization", {}).items() if k != "n_images"}
    return {**target, "randomization": randomization}


def compute_randomized_maps(
    path: str | Path,
    method: str,
    params: dict,
    model_sha256: str,
    target: dict,
    image_ids: list[str],
    steps: list[str],
    compute_step: Callable[[int, int, list[int]], tuple[np.ndarray, np.ndarray]],
    draws: list[int] | None = None,
    image_keys: list[str] | None = None,
    store: MapStore | None = None,
    batch_size: int = 16,
) -> int:
    """Write the maps of every draw and step of a randomized model: reused from ``store`` where it holds them
    (entries ``draw<seed>/step<k>-<blocks>/<image key>``), else ``compute_step(d, k, indices)`` -> (maps, raw)
    of draw ``d``, step ``k`` (0-based) and those images. ``draws``: the draws' re-initialization seeds (one
    draw, seed 0, when None); ``image_keys`` default to the ids.

    Returns the number of maps computed."""
    path = Path(path)
    draws = [0] if draws is None else [int(d) for d in draws]
    image_keys = list(image_ids) if image_keys is None else list(image_keys)
    target = {**target, "steps": list(steps), "draws": draws}
    constant: list[tuple[int, str, int]] = []
    computed = 0
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            _write_ids(h5, image_ids)
            dsets = None
            for d, draw in enumerate(draws):
                for k, block in enumerate(steps):
                    what = f"{path}: {method}, randomization step {k + 1} ({block}), draw {d + 1}"
                    entries = [f"draw{draw}/step{k + 1}-{block}/{key}" for key in image_keys]
                    maps, raw, n = _from_store_or_compute(
                        store, entries, image_ids, lambda rows, d=d, k=k: compute_step(d, k, rows), batch_size, what
                    )
                    computed += n
                    constant += [(k + 1, i, d + 1) for i in constant_ids(maps, image_ids, what)]
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
    return computed


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


def write_segments(path: str | Path, image_ids: list[str], labels, params: dict | None = None) -> None:
    """Write XRAI segment label images (N x levels x H x W, or an iterable of levels x H x W, written as they
    come) atomically; ``params`` (the segmentation's settings,
    :func:`saliency_trust.saliency.xrai.segment_params`) are stored as JSON attributes."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            _write_ids(h5, image_ids)
            dset, sums = None, []
            k = -1
            for k, label_image in enumerate(labels):
                if dset is None:
                    shape = tuple(np.shape(label_image))
                    dset = h5.create_dataset(
                        "labels", (len(image_ids), *shape), np.int32, chunks=(1, *shape), compression="gzip"
                    )
                dset[k] = stored = np.asarray(label_image, np.int32)
                sums += row_sha256(stored[None])
            if k + 1 != len(image_ids):
                raise ValueError(f"{path}: {k + 1} segment label images for {len(image_ids)} images")
            if dset is None:
                h5.create_dataset("labels", (0, 0, 0, 0), np.int32)
            h5.create_dataset("labels_sha256", data=np.array(sums, dtype="S64"))
            for key, value in (params or {}).items():
                h5.attrs[key] = json.dumps(value)
            h5.attrs["versions"] = json.dumps(package_versions(), sort_keys=True)
            stamp_checksums(h5)


def read_segments(path: str | Path, image_ids: list[str]) -> np.ndarray:
    """Label images of the given images (one batch), in that order; names a missing image. Only those images'
    labels are read; the ids are verified against the file's checksum."""
    with h5py.File(path, "r") as h5:
        stored = _read_ids(h5)
        verify_h5(path, h5, {"image_id": stored})
        index = {i: k for k, i in enumerate(stored)}
        missing = [i for i in image_ids if i not in index]
        if missing:
            raise KeyError(f"{path}: no XRAI segments for image '{missing[0]}'")
        rows = np.asarray([index[i] for i in image_ids], dtype=np.int64)
        if not len(rows):
            return np.empty((0, *h5["labels"].shape[1:]), np.int32)
        unique, back = np.unique(rows, return_inverse=True)
        labels = np.stack([h5["labels"][int(row)] for row in unique])  # per row: h5py's point selection is slow
        sums = h5["labels_sha256"][:] if "labels_sha256" in h5 else None
    if sums is None:  # written by an older version: the whole labels checked against the file's checksum
        with h5py.File(path, "r") as h5:
            verify_h5(path, h5, {"labels": h5["labels"][:]})
    else:
        verify_rows(path, "labels", unique, labels, sums)
    return labels[back]


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


def read_maps_of(path: str | Path, image_ids: list[str], method: str | None = None) -> np.ndarray:
    """Only the maps of ``image_ids`` (in that order): K x H x W, or D x S x K x H x W for a randomized-model file
    (one batch: the maps are verified against their per-map checksums where the file has them). A KeyError names
    an id the file lacks; a ``method`` other than the file's is a ValueError."""
    with h5py.File(path, "r") as h5:
        if method is not None and h5.attrs["method"] != method:
            raise ValueError(f"{path}: holds method '{h5.attrs['method']}', expected '{method}'")
        stored = _read_ids(h5)
        verify_h5(path, h5, {"image_id": stored})  # the maps themselves are read in part: not verified
        position = {i: k for k, i in enumerate(stored)}
        missing = [i for i in image_ids if i not in position]
        if missing:
            raise KeyError(f"{path}: no map of image(s) {missing[:5]}")
        rows = np.asarray([position[i] for i in image_ids], dtype=int)
        order = np.argsort(rows)
        stepped = "steps" in h5.attrs
        if stepped:
            data = h5["map"][:, :, rows[order]]
        else:  # per row: h5py's point selection is ~100x slower on per-image chunks (measured)
            data = np.stack([h5["map"][int(row)] for row in rows[order]]) if len(rows) else h5["map"][:0]
        sums = h5["map_sha256"][:] if "map_sha256" in h5 and not stepped else None
    if sums is not None:
        verify_rows(path, "map", rows[order], data, sums)
    back = np.argsort(order)
    return data[:, :, back] if stepped else data[back]


def iter_map_blocks(path: str | Path, name: str = "map", block: int = 32):
    """Read a cache file's ``map`` or ``raw`` dataset ``block`` images at a time: yields (ids, array, attributes).
    The content is hashed as it is read (the digest of :func:`~saliency_trust.io.dataset_sha256`); a mismatch
    with the file's checksum, known after the last block, removes the file and raises
    :class:`~saliency_trust.io.CorruptFileError`, so callers write nothing before the iteration ends."""
    from saliency_trust.io import CHECKSUM_ATTR, CorruptFileError

    if name not in ("map", "raw"):
        raise ValueError(f"cache files hold 'map' and 'raw', not '{name}'")
    with h5py.File(path, "r") as h5:
        attrs = {k: h5.attrs[k] for k in h5.attrs}
        ids = _read_ids(h5)
        verify_h5(path, h5, {"image_id": ids})
        dset = h5[name]
        digest = hashlib.sha256(f"{dset.dtype.str}{tuple(dset.shape)}".encode())
        for start in range(0, len(dset), block):
            arr = dset[start : start + block]
            digest.update(memoryview(np.ascontiguousarray(arr)).cast("B"))
            yield ids[start : start + block], arr, attrs
    stored = json.loads(attrs.get(CHECKSUM_ATTR, "{}")).get(name)
    if stored is not None and stored != digest.hexdigest():
        Path(path).unlink(missing_ok=True)
        raise CorruptFileError(
            f"{path}: the content of '{name}' does not match its checksum: the file is corrupted. "
            "It has been removed; run snakemake again and it is recomputed"
        )
