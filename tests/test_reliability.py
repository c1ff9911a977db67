"""Bad input, interruption and determinism at the package level (docs/troubleshooting.md, issue 8).

The end-to-end checks (killing jobs, rerunning, corrupted caches inside a run) are in
``test_interruption.py``.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import REPO

from saliency_trust.data.canonical import load_dataset, write_dataset
from saliency_trust.io import CorruptFileError
from saliency_trust.storage.maps import (
    MapStore,
    compute_maps,
    compute_randomized_maps,
    read_maps,
    read_randomized_maps,
    read_segments,
    write_maps,
    write_segments,
)

IDS = ["a", "b", "c"]


def _maps(seed=0):
    return np.random.default_rng(seed).random((3, 8, 8), dtype=np.float32)


def _write_each_kind(tmp_path, tiny_dataset) -> dict[str, tuple[Path, str, callable]]:
    """One file of every HDF5 kind the pipeline writes: (path, a dataset to damage, its reader)."""
    maps = _maps()
    write_maps(tmp_path / "maps.h5", IDS, maps, maps[:, None], "GRAD", {}, "m", {})
    compute_randomized_maps(
        tmp_path / "rand.h5",
        "GRAD",
        {},
        "m",
        {},
        IDS,
        ["fc", "conv"],
        lambda d, k, rows: (maps[rows], maps[rows, None]),
    )
    write_segments(tmp_path / "seg.h5", IDS, np.arange(3 * 6 * 8 * 8, dtype=np.int32).reshape(3, 6, 8, 8))
    d = tiny_dataset
    write_dataset(
        d.manifest,
        d.images,
        d.masks,
        d.manifest.iloc[:0].assign(label="", rater="", x=0, y=0, width=0, height=0),
        d.label_names,
        tmp_path / "manifest.csv",
        tmp_path / "images.h5",
        tmp_path / "boxes.csv",
        "synthetic",
    )
    return {
        "maps": (tmp_path / "maps.h5", "map", lambda p: read_maps(p)),
        "randomized": (tmp_path / "rand.h5", "map", lambda p: read_randomized_maps(p)),
        "segments": (tmp_path / "seg.h5", "labels", lambda p: read_segments(p, IDS)),
        "canonical": (tmp_path / "images.h5", "image", lambda p: load_dataset(tmp_path / "manifest.csv", p)),
    }


@pytest.mark.parametrize("kind", ["maps", "randomized", "segments", "canonical"])
def test_every_hdf5_file_carries_a_checksum_and_a_corrupted_one_is_detected_and_removed(
    tmp_path, tiny_dataset, kind, caplog
):
    path, name, read = _write_each_kind(tmp_path, tiny_dataset)[kind]
    read(path)  # intact: reads
    with h5py.File(path, "r+") as h5:  # damage one value; the file stays a valid HDF5 file
        assert "sha256" in h5.attrs
        index = (0,) * (h5[name].ndim - 2) + (1, 1)
        h5[name][index] = h5[name][index] + 1
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(CorruptFileError, match=f"{path}: the content of '{name}' does not match its checksum"),
    ):
        read(path)
    assert not path.exists()  # removed: the next snakemake run recomputes it
    assert "corrupted and has been removed" in caplog.text


def _store_run(tmp_path, maps, calls) -> tuple[int, MapStore]:
    """compute_maps of IDS as a rerun job does it: output removed, maps from the store where it holds them."""
    path = tmp_path / "IG.h5"
    path.unlink(missing_ok=True)
    store = MapStore(tmp_path / "store", "IG", {}, "m", {})

    def compute(rows):
        calls.append(list(rows))
        return maps[rows], maps[rows, None]

    return compute_maps(path, "IG", {}, "m", {}, IDS, [f"key-{i}" for i in IDS], compute, store), store


@pytest.mark.parametrize("name", ["map", "raw"])
def test_a_damaged_store_entry_is_recomputed_with_a_warning(tmp_path, caplog, name):
    maps, calls = _maps(), []
    assert _store_run(tmp_path, maps, calls)[0] == 3
    n, store = _store_run(tmp_path, maps, calls)
    assert n == 0 and calls == [[0, 1, 2]]  # intact: reused
    with h5py.File(store.path, "r+") as h5:  # damage one value of image c; the file stays a valid HDF5 file
        h5[f"key-c/{name}"][(0,) * (h5[f"key-c/{name}"].ndim - 2) + (3, 3)] = -1.0
    with caplog.at_level(logging.WARNING):
        assert _store_run(tmp_path, maps, calls)[0] == 1
    assert f"{store.path}: entry key-c is damaged; computed again" in caplog.text
    assert calls[-1] == [2]
    cached = read_maps(tmp_path / "IG.h5", with_raw=True)
    np.testing.assert_array_equal(cached.maps, maps)
    np.testing.assert_array_equal(cached.raw, maps[:, None])
    assert _store_run(tmp_path, maps, calls)[0] == 0  # saved again, intact


def test_an_unreadable_store_file_is_removed_and_everything_recomputed(tmp_path, caplog):
    maps, calls = _maps(), []
    _, store = _store_run(tmp_path, maps, calls)
    store.path.write_bytes(b"\x89HDF garbage, not what was written")
    with caplog.at_level(logging.WARNING):
        assert _store_run(tmp_path, maps, calls)[0] == 3
    assert f"{store.path}: unreadable" in caplog.text and "removed, its maps are computed again" in caplog.text
    assert calls == [[0, 1, 2], [0, 1, 2]]
    np.testing.assert_array_equal(read_maps(tmp_path / "IG.h5").maps, maps)
    assert h5py.is_hdf5(store.path)  # the store of this run replaces it
    assert _store_run(tmp_path, maps, calls)[0] == 0


def test_a_file_without_checksums_is_read_with_a_warning_and_a_store_entry_without_one_is_not_reused(tmp_path, caplog):
    path, maps = tmp_path / "IG.h5", _maps()
    write_maps(path, IDS, maps, maps[:, None], "IG", {}, "m", {})
    with h5py.File(path, "r+") as h5:  # as written before checksums existed
        del h5.attrs["sha256"]
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(read_maps(path).maps, maps)
    assert "no content checksum" in caplog.text
    calls = []
    _, store = _store_run(tmp_path, maps, calls)
    with h5py.File(store.path, "r+") as h5:
        del h5["key-b"].attrs["sha256"]
    assert _store_run(tmp_path, maps, calls)[0] == 1
    assert calls == [[0, 1, 2], [1]]


# --- atomic writes -------------------------------------------------------------------------------------


def _write_target(call: ast.Call) -> ast.AST | None:
    """The path a call writes to: ``df.to_csv(p)``, ``fig.savefig(p)``, ``torch.save(obj, p)``,
    ``p.write_text(...)``, ``p.write_bytes(...)``, ``h5py.File(p, "w")``, ``open(p, "w")``; None for other calls."""
    func = call.func
    if not isinstance(func, ast.Attribute):
        name, owner = getattr(func, "id", ""), None
    else:
        name, owner = func.attr, func.value
    mode = "".join(ast.unparse(a) for a in call.args[1:2]) + "".join(
        ast.unparse(k.value) for k in call.keywords if k.arg == "mode"
    )
    if name in ("to_csv", "savefig", "to_latex", "to_parquet") and owner is not None and call.args:
        return call.args[0]
    if name == "save" and owner is not None and ast.unparse(owner) == "torch" and len(call.args) > 1:
        return call.args[1]
    if name in ("write_text", "write_bytes") and owner is not None:
        return owner
    if name in ("File", "open") and call.args and any(c in mode for c in "wax+"):
        return call.args[0]
    return None


def _unguarded_writes(tree: ast.AST) -> list[int]:
    """Lines of file writes whose target is not a name bound from ``atomic_path`` in the same function."""
    bad = []
    for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        safe: set[str] = set()

        def guarded(expr: ast.AST, safe=safe) -> bool:  # mentions atomic_path or a name bound from it
            return "atomic_path" in ast.unparse(expr) or bool(
                {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)} & safe
            )

        for node in ast.walk(func):
            bound = (
                node.optional_vars
                if isinstance(node, ast.withitem) and guarded(node.context_expr)
                else ast.Tuple(node.targets)
                if isinstance(node, ast.Assign) and guarded(node.value)
                else None
            )
            safe |= {n.id for n in ast.walk(bound) if isinstance(n, ast.Name)} if bound is not None else set()
        for node in ast.walk(func):
            target = _write_target(node) if isinstance(node, ast.Call) else None
            if target is not None and not {n.id for n in ast.walk(target) if isinstance(n, ast.Name)} & safe:
                bad.append(node.lineno)
    return bad


def _function_at(tree: ast.AST, line: int) -> str:
    """``Class.function`` (or ``function``) of the innermost definition holding ``line``."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.lineno <= line <= node.end_lineno:
                names.append((node.lineno, node.name))
    return ".".join(name for _, name in sorted(names))


def test_every_output_file_is_written_through_atomic_path():
    """Static check over the package: CSV, text, figures, checkpoints and HDF5 files go to a temporary path
    from :func:`saliency_trust.io.atomic_path` and are renamed into place only when complete."""
    offenders = {}
    for path in sorted((REPO / "src/saliency_trust").rglob("*.py")):
        tree = ast.parse(path.read_text())
        bad = _unguarded_writes(tree)
        if bad:
            offenders[str(path.relative_to(REPO))] = sorted({_function_at(tree, line) for line in bad})
    # The one write in place: the map store appends finished batches to its file, so that a killed job keeps
    # them (docs/new-data.md); a damaged entry fails its checksum and an unreadable file is removed
    # (test_a_damaged_store_entry_is_recomputed_with_a_warning, test_an_unreadable_store_file_is_removed...).
    assert offenders == {"src/saliency_trust/storage/maps.py": ["MapStore.save"]}
    # the checker is not vacuous: a direct write is flagged
    assert _unguarded_writes(ast.parse("def f(df, out):\n    df.to_csv(out)\n")) == [2]
    assert _unguarded_writes(ast.parse("def f(out):\n    with h5py.File(out, 'w') as h5:\n        pass\n")) == [2]
    assert (
        _unguarded_writes(ast.parse("def f(out):\n    with atomic_path(out) as t:\n        torch.save({}, t)\n")) == []
    )
    assert _unguarded_writes(
        ast.parse("def f(out):\n    with open(out, 'wb') as fh:\n        torch.save({}, fh)\n")
    ) == [2, 3]


def test_a_killed_writer_leaves_only_a_temporary_file_that_the_next_write_removes(tmp_path):
    from saliency_trust.io import atomic_path, write_text

    out = tmp_path / "table.csv"
    stale = tmp_path / ".table.csv.abc123.tmp"  # what a SIGKILLed job leaves: never a file named like a result
    stale.write_text("half a tab")
    assert not out.exists()
    write_text("a,b\n1,2\n", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert out.read_text() == "a,b\n1,2\n" and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


# --- training resumes after a kill ----------------------------------------------------------------------


class KilledAfter:
    """Wraps the real :class:`EpochCheckpoint`: the process is 'killed' (KeyboardInterrupt, as on Ctrl-C)
    right after epoch ``n`` is checkpointed."""

    def __init__(self, checkpoint, n: int):
        self.checkpoint, self.n = checkpoint, n

    def __getattr__(self, name):
        return getattr(self.checkpoint, name)

    def save(self, epoch, *args):
        self.checkpoint.save(epoch, *args)
        if epoch == self.n:
            raise KeyboardInterrupt(f"killed after epoch {epoch}")


def _trainers(tiny_dataset):
    from test_detector import TINY, _square_dataset

    from saliency_trust.models.detector import train_detector
    from saliency_trust.models.train import TrainSettings, train_classifier
    from saliency_trust.models.unet import UNetSettings, train_unet

    cpu = torch.device("cpu")
    squares, boxes = _square_dataset()
    return {
        "classifier": (
            lambda ck: train_classifier(
                tiny_dataset, "simple_cnn", TrainSettings(epochs=4, patience=10, lr=3e-3, batch_size=16), 3, cpu, ck
            ),
            2,
        ),
        "unet": (
            lambda ck: train_unet(
                tiny_dataset,
                "abnormal",
                UNetSettings(epochs=3, patience=5, width=4, depth=2, batch_size=16),
                3,
                cpu,
                ck,
            ),
            1,
        ),
        "detector": (lambda ck: train_detector(squares, boxes, "lesion", TINY, 5, cpu, ck), 1),
    }


@pytest.mark.parametrize("trainer", ["classifier", "unet", "detector"])
def test_training_resumes_from_its_last_epoch_checkpoint_with_the_uninterrupted_result(
    tmp_path, tiny_dataset, trainer, caplog
):
    from saliency_trust.models.train import EpochCheckpoint

    train, kill_after = _trainers(tiny_dataset)[trainer]
    model, history, metrics = train(None)  # uninterrupted
    checkpoint = EpochCheckpoint(tmp_path / "model.pt", {"trainer": trainer})
    with pytest.raises(KeyboardInterrupt):
        train(KilledAfter(checkpoint, kill_after))
    assert checkpoint.path == tmp_path / "model.resume.pt" and checkpoint.path.exists()
    with caplog.at_level(logging.INFO):
        resumed, resumed_history, resumed_metrics = train(EpochCheckpoint(tmp_path / "model.pt", {"trainer": trainer}))
    assert f"epoch {kill_after} finished" in caplog.text
    assert list(resumed_history["epoch"]) == list(history["epoch"])
    assert resumed_history.drop(columns="seconds").equals(history.drop(columns="seconds"))
    assert resumed_metrics == metrics
    a, b = model.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path, tiny_dataset, caplog):
    from saliency_trust.models.train import EpochCheckpoint

    train, _ = _trainers(tiny_dataset)["classifier"]
    with pytest.raises(KeyboardInterrupt):
        train(KilledAfter(EpochCheckpoint(tmp_path / "model.pt", {"lr": 1}), 1))
    with caplog.at_level(logging.INFO):
        _, history, _ = train(EpochCheckpoint(tmp_path / "model.pt", {"lr": 2}))
    assert "written for other settings or data; training from epoch 1" in caplog.text
    assert "resuming" not in caplog.text and len(history) == 4


# --- NaN and constant maps ------------------------------------------------------------------------------


@pytest.fixture
def canonical_files(tmp_path, tiny_dataset):
    """The tiny dataset written as the canonical files: (manifest, images)."""
    _write_each_kind(tmp_path, tiny_dataset)
    return tmp_path / "manifest.csv", tmp_path / "images.h5"


def test_a_model_that_outputs_nan_stops_the_saliency_job_naming_the_image_and_leaves_no_file(tmp_path, canonical_files):
    from saliency_trust.models.registry import build_model
    from saliency_trust.models.train import TrainSettings, save_checkpoint
    from saliency_trust.saliency.compute import explained_images, run_saliency

    model = build_model("simple_cnn", 1)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if n.endswith("bias")).fill_(float("nan"))
    save_checkpoint(model, "simple_cnn", ["abnormal"], TrainSettings(), tmp_path / "model.pt")
    first = explained_images(load_dataset(*canonical_files), "abnormal")[0][0]
    out = tmp_path / "GRAD.h5"
    with pytest.raises(FloatingPointError, match=f"GRAD: the model outputs NaN/inf for image '{first}'"):
        run_saliency(*canonical_files, tmp_path / "model.pt", "GRAD", {}, None, "logit", 4, "cpu", 1, out)
    assert not out.exists() and not list(tmp_path.glob(".GRAD.h5*"))


def test_training_that_diverges_to_nan_stops_naming_the_model_and_epoch(tiny_dataset):
    from saliency_trust.models.train import TrainSettings, train_classifier

    with pytest.raises(FloatingPointError, match="simple_cnn: training loss became NaN/inf at epoch 1"):
        train_classifier(tiny_dataset, "simple_cnn", TrainSettings(epochs=2, lr=float("inf")), 1, torch.device("cpu"))


def test_constant_maps_are_scored_logged_and_listed_in_a_table(tmp_path, caplog):
    from saliency_trust.storage.maps import constant_maps_table, run_constant_maps

    maps = _maps()
    maps[1] = 0.0  # e.g. an all-zero Grad-CAM
    with caplog.at_level(logging.WARNING):
        write_maps(tmp_path / "GCAM.h5", IDS, maps, maps[:, None], "GCAM", {}, "m", {})
    assert "1 constant map(s), scored as all-zero maps" in caplog.text and "image 'b'" in caplog.text
    np.testing.assert_array_equal(read_maps(tmp_path / "GCAM.h5").maps[1], 0.0)  # kept and scored, not dropped
    steps = [maps, np.zeros_like(maps)]  # step 2: every map constant
    compute_randomized_maps(
        tmp_path / "rand.h5",
        "GCAM",
        {},
        "m",
        {},
        IDS,
        ["fc", "conv"],
        lambda d, k, rows: (steps[k][rows], steps[k][rows, None]),
    )
    run_constant_maps([tmp_path / "GCAM.h5", tmp_path / "rand.h5"], tmp_path / "constant_maps.csv")
    g, r = tmp_path / "GCAM.h5", tmp_path / "rand.h5"
    assert (tmp_path / "constant_maps.csv").read_text().splitlines() == [
        "file,method,draw,step,block,image_id",
        f"{g},GCAM,,,,b",
        f"{r},GCAM,1,1,fc,b",
        *[f"{r},GCAM,1,2,conv,{i}" for i in IDS],
    ]
    assert constant_maps_table([g]).shape == (1, 6)


def test_identical_models_are_saved_as_identical_bytes(tmp_path):
    """model.pt's SHA-256 keys the saliency caches: two runs that train the same weights must give the same file."""
    from saliency_trust.io import sha256_file
    from saliency_trust.models.serialization import save_torch

    state = {"w": torch.arange(6.0).reshape(2, 3)}
    save_torch(state, tmp_path / "a" / "model.pt")
    save_torch(state, tmp_path / "b" / "model.pt")
    assert sha256_file(tmp_path / "a" / "model.pt") == sha256_file(tmp_path / "b" / "model.pt")
    assert torch.equal(torch.load(tmp_path / "a" / "model.pt", weights_only=True)["w"], state["w"])
