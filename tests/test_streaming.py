"""Compact canonical storage and the streaming readers (docs/scaling.md).

A dataset larger than ``storage.in_memory_mb`` is read batch by batch; every test here compares the streamed
path with the in-memory path on the same file (they must agree bit for bit), or the stored values with the
encoding's own rounding (an independent reference: numpy's ``rint`` of the intensity times 65535).
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from saliency_trust.data.canonical import (
    BOX_COLUMNS,
    IMAGE_ENCODINGS,
    RowView,
    StoredArray,
    decode_images,
    encode_images,
    load_dataset,
    write_dataset,
)
from saliency_trust.io import CorruptFileError, configure_storage, storage_option


@pytest.fixture
def canonical_files(tmp_path, tiny_dataset):
    """The tiny dataset written in canonical form (uint16): (manifest, images) paths."""
    d = tiny_dataset
    files = [tmp_path / "manifest.csv", tmp_path / "images.h5", tmp_path / "boxes.csv"]
    write_dataset(d.manifest, d.images, d.masks, pd.DataFrame(columns=BOX_COLUMNS), d.label_names, *files, "test")
    return files[0], files[1]


@pytest.fixture
def streaming():
    """Jobs of this test stream whatever the dataset size (storage.in_memory_mb 0); restored afterwards."""
    before = {k: storage_option(k) for k in ("in_memory_mb", "loader_workers")}
    configure_storage({"in_memory_mb": 0, "loader_workers": 0})
    yield
    configure_storage(before)


@pytest.mark.parametrize("encoding", sorted(IMAGE_ENCODINGS))
def test_each_encoding_rounds_to_its_nearest_level(encoding):
    x = np.random.default_rng(0).random((5, 9, 7)).astype(np.float32)
    x[0, 0, 0], x[0, 0, 1] = 0.0, 1.0
    stored = encode_images(x, encoding)
    dtype, top = IMAGE_ENCODINGS[encoding]
    assert stored.dtype == dtype
    back = decode_images(stored, None if top is None else 1.0 / top)
    assert back.dtype == np.float32 and back[0, 0, 0] == 0.0 and back[0, 0, 1] == 1.0
    if top is None:
        np.testing.assert_array_equal(back, x.astype(dtype).astype(np.float32))
    else:  # the reference: numpy's rounding of the scaled intensity, decoded with float32 arithmetic
        np.testing.assert_array_equal(stored, np.rint(x.astype(np.float64) * top).astype(dtype))
        assert np.abs(back - x).max() <= 0.5 / top + 1e-7


def test_uint16_store_is_smaller_than_float32_and_holds_one_checksum_per_image(tmp_path, tiny_dataset):
    d = tiny_dataset
    sizes = {}
    for encoding in ("uint16", "float32"):
        files = [tmp_path / f"{encoding}.{n}" for n in ("csv", "h5", "boxes.csv")]
        write_dataset(
            d.manifest, d.images, d.masks, pd.DataFrame(columns=BOX_COLUMNS), d.label_names, *files, "t", encoding
        )
        with h5py.File(files[1], "r") as h5:
            sizes[encoding] = h5["image"].id.get_storage_size()
            assert h5["image"].chunks == (1, *d.images.shape[1:])  # one chunk per image: read alone
            assert h5["image"].attrs["encoding"] == encoding
            assert len(h5["image_sha256"]) == len(h5["mask_sha256"]) == len(d.manifest)
    assert sizes["uint16"] < 0.8 * sizes["float32"]


def test_stored_array_indexes_like_the_array_it_stores(canonical_files):
    manifest, images = canonical_files
    whole = load_dataset(manifest, images, in_memory_mb=1e9)
    assert not whole.streamed
    lazy = StoredArray(images, "image")
    masks = StoredArray(images, "mask")
    assert lazy.shape == whole.images.shape and len(lazy) == len(whole.images)
    np.testing.assert_array_equal(lazy[5], whole.images[5])
    np.testing.assert_array_equal(lazy[3:9], whole.images[3:9])
    rows = [40, 2, 40, 7]  # unsorted, repeated
    np.testing.assert_array_equal(lazy[rows], whole.images[rows])
    np.testing.assert_array_equal(lazy[np.array(rows), 4:6], whole.images[rows, 4:6])
    np.testing.assert_array_equal(masks[rows, 0], whole.masks[rows, 0])
    pick = np.zeros(len(lazy), bool)
    pick[[1, 10]] = True
    np.testing.assert_array_equal(lazy[pick], whole.images[pick])
    view = RowView(lazy, [9, 4, 30])
    np.testing.assert_array_equal(view[1:], whole.images[[4, 30]])
    np.testing.assert_array_equal(np.asarray(view), whole.images[[9, 4, 30]])
    with pytest.raises(IndexError):
        lazy[[len(lazy)]]


def test_a_dataset_above_the_in_memory_cap_is_streamed_with_the_same_values(canonical_files):
    manifest, images = canonical_files
    kept, streamed = load_dataset(manifest, images, in_memory_mb=1e9), load_dataset(manifest, images, in_memory_mb=0)
    assert streamed.streamed and not kept.streamed
    rows = streamed.indices("test")
    np.testing.assert_array_equal(np.asarray(streamed.image_rows(rows)), kept.image_rows(rows))
    assert streamed.image_shape == kept.image_shape


def test_bad_images_are_refused_naming_the_image_and_leave_no_file(tmp_path, tiny_dataset):
    d = tiny_dataset
    for bad, why in ((1.5, "outside the canonical range"), (np.nan, "NaN")):
        images = d.images.copy()
        images[3, 2, 2] = bad
        files = [tmp_path / "m.csv", tmp_path / "i.h5", tmp_path / "b.csv"]
        with pytest.raises(ValueError, match=f"image '{d.manifest['image_id'].iloc[3]}'.*{why}|{why}.*"):
            write_dataset(d.manifest, images, d.masks, pd.DataFrame(columns=BOX_COLUMNS), d.label_names, *files, "t")
        assert not any(f.exists() for f in files)


def test_a_damaged_image_is_detected_when_its_batch_is_read(canonical_files):
    manifest, images = canonical_files
    data = load_dataset(manifest, images, in_memory_mb=0)
    with h5py.File(images, "r+") as h5:  # damage image 11 only; the file stays valid HDF5
        h5["image"][11, 3, 3] = h5["image"][11, 3, 3] ^ 1
    np.testing.assert_array_equal(data.images[[0, 1]].shape, (2, *data.image_shape))  # intact rows read
    with pytest.raises(CorruptFileError, match=r"the content of 'image' does not match its checksum \(row 11\)"):
        data.images[[10, 11]]
    assert not images.exists()  # removed: the next run prepares the data again


def test_streamed_training_gives_the_in_memory_model_bit_for_bit(canonical_files):
    """The loader reads rows from the file (workers 0 and 2) in the sampler's order: same batches, same model."""
    from saliency_trust.models.train import TrainSettings, train_classifier

    manifest, images = canonical_files
    settings = TrainSettings(epochs=2, patience=5, lr=3e-3, batch_size=16)
    results = {}
    for name, cap, workers in (("memory", 1e9, 0), ("stream", 0, 0), ("workers", 0, 2)):
        configure_storage({"in_memory_mb": cap, "loader_workers": workers})
        try:
            data = load_dataset(manifest, images)
            assert data.streamed == (cap == 0)
            model, history, metrics = train_classifier(data, "simple_cnn", settings, 3, torch.device("cpu"))
        finally:
            configure_storage({})
        results[name] = (model.state_dict(), history, metrics)
    ref_state, ref_history, ref_metrics = results["memory"]
    for name in ("stream", "workers"):
        state, history, metrics = results[name]
        for key in ref_state:
            torch.testing.assert_close(state[key], ref_state[key], rtol=0, atol=0)
        pd.testing.assert_frame_equal(history.drop(columns="seconds"), ref_history.drop(columns="seconds"))
        assert metrics["test_auc"] == ref_metrics["test_auc"]


def test_streamed_unet_training_gives_the_in_memory_model(canonical_files):
    from saliency_trust.models.unet import UNetSettings, train_unet

    manifest, images = canonical_files
    settings = UNetSettings(epochs=1, width=4, depth=2, batch_size=8)
    states = []
    for cap in (1e9, 0):
        data = load_dataset(manifest, images, in_memory_mb=cap)
        configure_storage({"loader_workers": 0})
        try:
            model, _, metrics = train_unet(data, "abnormal", settings, 5, torch.device("cpu"))
        finally:
            configure_storage({})
        states.append((model.state_dict(), metrics["test_dice"]))
    for key in states[0][0]:
        torch.testing.assert_close(states[1][0][key], states[0][0][key], rtol=0, atol=0)
    assert states[1][1] == states[0][1]


def test_streamed_saliency_and_utility_jobs_write_the_in_memory_results(tmp_path, canonical_files, trained_models):
    """A saliency job and the utility job on a dataset above the cap: the same maps and scores, each written
    batch by batch (MapWriter), as when the dataset is in memory."""
    from saliency_trust.metrics.utility import run_utility
    from saliency_trust.models.train import TrainSettings, save_checkpoint
    from saliency_trust.saliency.compute import run_saliency
    from saliency_trust.storage.maps import read_maps

    manifest, images = canonical_files
    model_path = tmp_path / "model.pt"
    save_checkpoint(trained_models["simple_cnn"], "simple_cnn", ["abnormal"], TrainSettings(), model_path)
    outputs = {}
    for name, cap in (("memory", 1e9), ("stream", 0)):
        configure_storage({"in_memory_mb": cap})
        try:
            maps_path = tmp_path / f"IG-{name}.h5"
            run_saliency(manifest, images, model_path, "IG", {"n_steps": 5}, None, "logit", 4, "cpu", 1, maps_path)
            run_utility(manifest, images, [maps_path], "m", ["IG"], None, ["iou", "topk"], tmp_path / f"u-{name}.csv")
        finally:
            configure_storage({})
        outputs[name] = (read_maps(maps_path, with_raw=True), pd.read_csv(tmp_path / f"u-{name}.csv"))
    (memory, u_memory), (stream, u_stream) = outputs["memory"], outputs["stream"]
    assert memory.image_ids == stream.image_ids and len(memory.image_ids) > 4  # several batches
    np.testing.assert_array_equal(stream.maps, memory.maps)
    np.testing.assert_array_equal(stream.raw, memory.raw)
    pd.testing.assert_frame_equal(u_stream, u_memory)
    assert json.loads(stream.attrs["constant_maps"]) == json.loads(memory.attrs["constant_maps"])


def test_map_writer_takes_rows_in_any_order_and_refuses_a_missing_one(tmp_path):
    from saliency_trust.storage.maps import MapWriter, read_maps, read_maps_of

    maps = np.random.default_rng(1).random((5, 6, 6), dtype=np.float32)
    ids = list("abcde")
    with MapWriter(tmp_path / "m.h5", ids) as writer:
        writer.write([4, 0], maps[[4, 0]], maps[[4, 0], None])
        writer.write([1, 2, 3], maps[1:4], maps[1:4, None])
        writer.finish("GRAD", {}, "sha", {})
    np.testing.assert_array_equal(read_maps(tmp_path / "m.h5").maps, maps)
    np.testing.assert_array_equal(read_maps_of(tmp_path / "m.h5", ["d", "a"]), maps[[3, 0]])
    with pytest.raises(ValueError, match="no map was written for image 'c'"):
        with MapWriter(tmp_path / "n.h5", ids) as writer:
            writer.write([0, 1, 3, 4], maps[[0, 1, 3, 4]], maps[[0, 1, 3, 4], None])
            writer.finish("GRAD", {}, "sha", {})
    assert not (tmp_path / "n.h5").exists() and not list(tmp_path.glob(".n.h5.*"))


def test_a_damaged_map_is_detected_when_read_in_part(tmp_path):
    from saliency_trust.storage.maps import read_maps_of, write_maps

    maps = np.random.default_rng(2).random((4, 6, 6), dtype=np.float32)
    path = tmp_path / "m.h5"
    write_maps(path, list("abcd"), maps, maps[:, None], "GRAD", {}, "sha", {})
    with h5py.File(path, "r+") as h5:
        h5["map"][2, 1, 1] = -1.0
    np.testing.assert_array_equal(read_maps_of(path, ["a"]), maps[[0]])
    with pytest.raises(CorruptFileError, match="the content of 'map' does not match its checksum"):
        read_maps_of(path, ["c"])
    assert not path.exists()


def test_synthetic_counterfactuals_compare_through_the_store_encoding():
    """The shortcut check regenerates synthetic images: a uint16 store holds them rounded, and the
    counterfactuals go through the same rounding, so they differ from the stored image by the marker only."""
    from saliency_trust.data.canonical import as_stored
    from saliency_trust.data.synthetic import ShortcutSpec, SyntheticSpec, generate_dataset
    from saliency_trust.metrics.shortcut import synthetic_counterfactuals

    spec = SyntheticSpec(n_images=6, image_size=32, shortcut=ShortcutSpec(enabled=True, p_positive=0.5, p_negative=0.5))
    manifest, images, _, _ = generate_dataset(spec, 2)
    ids, flags = manifest["image_id"].tolist(), manifest["shortcut_marker"].to_numpy()
    stored = as_stored(images, "uint16")
    assert not np.array_equal(stored, images) and np.abs(stored - images).max() <= 0.5 / 65535 + 1e-7
    with pytest.raises(ValueError, match="differs from the synthetic generator"):  # compared as float32: refused
        synthetic_counterfactuals(spec, 2, ids, stored, flags, "images.h5")
    removed, added, _ = synthetic_counterfactuals(spec, 2, ids, stored, flags, "images.h5", "uint16")
    for k in range(len(ids)):
        np.testing.assert_array_equal(stored[k], added[k] if flags[k] else removed[k])
