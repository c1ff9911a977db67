"""The per-image saliency store that survives Snakemake's removal of a rerun job's outputs (docs/new-data.md).

- saliency_trust.storage.maps: image_key, MapStore, compute_maps, compute_randomized_maps,
  randomized_store_target;
- saliency_trust.saliency.compute.randomization_subset: a subset that new images leave as it was.

Reuse is checked by counting what the compute callbacks are asked for (a reused map must not be asked for)
and by comparing the written files with the maps computed first.
"""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest

from saliency_trust.data.splits import split_uniform
from saliency_trust.saliency.compute import randomization_subset
from saliency_trust.storage import maps as cache
from saliency_trust.storage.maps import (
    MapStore,
    compute_maps,
    compute_randomized_maps,
    image_key,
    randomized_store_target,
    read_maps,
    read_randomized_maps,
)

TARGET = {"label": "abnormal", "output": "logit", "seed": 3}
RAND_TARGET = {**TARGET, "randomization": {"mode": "cascading", "init": "default", "n_images": 0}}


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 8, 8), dtype=np.float32)


def _explainer(images: np.ndarray, calls: list):
    """compute(rows) of a deterministic 'method': each map is a function of its image only; records the rows."""

    def compute(rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        calls.append(list(rows))
        maps = np.sqrt(images[rows])
        return maps, np.stack([images[rows], -images[rows]], axis=1)  # raw: K x 2 x H x W

    return compute


def _run(tmp_path, ids, images, calls, params=None, sha="m1", target=TARGET, method="IG", batch_size=16):
    """One job as Snakemake runs it: its output removed first, then written from the store and the computation."""
    out = tmp_path / "out" / f"{method}.h5"
    out.unlink(missing_ok=True)
    params = {"n_steps": 8} if params is None else params
    store = MapStore(tmp_path / "store", method, params, sha, target)
    keys = [image_key(i, img) for i, img in zip(ids, images)]
    n = compute_maps(out, method, params, sha, target, ids, keys, _explainer(images, calls), store, batch_size)
    return n, out, store


# ------------------------------------------------------------------ image_key


def test_image_key_depends_on_the_id_and_the_pixels_only():
    img = _images(1)[0]
    key = image_key("a", img)
    assert len(key) == 64 and int(key, 16) >= 0
    assert image_key("a", img.copy()) == key
    assert image_key("a", img.astype(np.float64)) == key  # pixels hashed as float32
    assert image_key("b", img) != key  # SmoothGrad's noise is seeded by the id
    changed = img.copy()
    changed[3, 4] += 0.01
    assert image_key("a", changed) != key
    assert image_key("a", img.T) != key  # same values, other pixels
    # the id and the pixels are separated: moving a byte from one to the other changes the key
    assert image_key("ab", img[1:]) != image_key("a", img[1:])


# ------------------------------------------------------------------ MapStore


def test_map_store_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    maps, raw = rng.random((3, 6, 5)), rng.random((3, 2, 6, 5))  # float64: stored as float32
    store = MapStore(tmp_path / "store", "GRAD", {}, "sha", TARGET)
    assert store.load(["k0"]) == {}  # no file yet
    assert not store.path.exists()
    store.save(["k0", "k1", "k2"], maps, raw)
    assert store.path.parent == tmp_path / "store" and store.path.name.startswith("GRAD-")
    got = MapStore(tmp_path / "store", "GRAD", {}, "sha", TARGET).load(["k2", "k0", "missing"])
    assert sorted(got) == ["k0", "k2"]
    for k, name in ((0, "k0"), (2, "k2")):
        m, r = got[name]
        assert m.dtype == np.float32 and r.dtype == np.float32
        np.testing.assert_array_equal(m, maps[k].astype(np.float32))
        np.testing.assert_array_equal(r, raw[k].astype(np.float32))
    store.save(["k1"], maps[:1] + 1, raw[:1] + 1)  # an entry saved again is replaced
    np.testing.assert_array_equal(store.load(["k1"])["k1"][0], (maps[0] + 1).astype(np.float32))
    np.testing.assert_array_equal(store.load(["k0"])["k0"][0], maps[0].astype(np.float32))  # the others stay
    with pytest.raises(ValueError):  # one map and one raw attribution per entry
        store.save(["k3", "k4"], maps[:1], raw[:1])


def test_store_file_name_changes_with_method_params_model_target_and_versions(tmp_path, monkeypatch):
    root = tmp_path / "store"
    params = {"n_samples": 25, "stdev": 0.15}
    base = MapStore(root, "SG", params, "m1", TARGET).path
    assert MapStore(root, "SG", dict(reversed(params.items())), "m1", dict(TARGET)).path == base  # key order: same
    others = [
        MapStore(root, "GRAD", params, "m1", TARGET).path,
        MapStore(root, "SG", {**params, "n_samples": 10}, "m1", TARGET).path,
        MapStore(root, "SG", params, "m2", TARGET).path,
        MapStore(root, "SG", params, "m1", {**TARGET, "seed": 4}).path,
        MapStore(root, "SG", params, "m1", {**TARGET, "output": "probability"}).path,
        MapStore(root, "SG", params, "m1", RAND_TARGET).path,
    ]
    monkeypatch.setattr(cache, "package_versions", lambda: {"torch": "0.0-other"})
    others.append(MapStore(root, "SG", params, "m1", TARGET).path)
    assert len({base, *others}) == len(others) + 1
    assert all(p.parent == root for p in others) and others[0].name.startswith("GRAD-")


def test_damaged_entry_is_recomputed_and_unreadable_store_file_is_removed(tmp_path, caplog):
    ids, images = ["a", "b", "c"], _images(3)
    calls: list = []
    assert _run(tmp_path, ids, images, calls)[0] == 3
    n, out, store = _run(tmp_path, ids, images, calls)
    assert n == 0 and calls == [[0, 1, 2]]
    key_b = image_key("b", images[1])
    with h5py.File(store.path, "r+") as h5:
        h5[f"{key_b}/map"][2, 2] = 7.0  # the file stays valid HDF5, one value differs
    with caplog.at_level(logging.WARNING):
        n, out, _ = _run(tmp_path, ids, images, calls)
    assert n == 1 and calls[-1] == [1]
    assert f"entry {key_b} is damaged; computed again" in caplog.text
    np.testing.assert_array_equal(read_maps(out).maps, np.sqrt(images))  # the damaged value is not used
    assert _run(tmp_path, ids, images, calls)[0] == 0  # the entry was saved again

    store.path.write_bytes(b"not an HDF5 file at all")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        n, out, _ = _run(tmp_path, ids, images, calls)
    assert n == 3 and calls[-1] == [0, 1, 2]
    assert "unreadable" in caplog.text and "removed" in caplog.text
    assert h5py.is_hdf5(store.path)  # a new store file, written by this run
    np.testing.assert_array_equal(read_maps(out).maps, np.sqrt(images))
    assert _run(tmp_path, ids, images, calls)[0] == 0


# ------------------------------------------------------------------ compute_maps


def test_entries_survive_the_removal_of_the_output_file(tmp_path):
    ids, images = ["a", "b", "c", "d"], _images(4)
    calls: list = []
    n, out, store = _run(tmp_path, ids, images, calls)
    assert n == 4 and calls == [[0, 1, 2, 3]]
    first = read_maps(out, "IG", {"n_steps": 8}, "m1", with_raw=True)
    out.unlink()  # Snakemake removes the outputs of a job it reruns
    assert store.path.exists()
    n, out, _ = _run(tmp_path, ids, images, calls)
    assert n == 0 and len(calls) == 1  # compute not called
    again = read_maps(out, "IG", {"n_steps": 8}, "m1", with_raw=True)
    assert again.image_ids == ids
    np.testing.assert_array_equal(again.maps, first.maps)
    np.testing.assert_array_equal(again.raw, first.raw)
    assert again.attrs["target"] == first.attrs["target"]


def test_a_changed_parameter_model_or_target_recomputes_everything(tmp_path):
    ids, images = ["a", "b"], _images(2)
    calls: list = []
    assert _run(tmp_path, ids, images, calls)[0] == 2
    for change in ({"params": {"n_steps": 16}}, {"sha": "m2"}, {"target": {**TARGET, "seed": 4}}):
        assert _run(tmp_path, ids, images, calls, **change)[0] == 2, change
        assert _run(tmp_path, ids, images, calls, **change)[0] == 0, change
        assert _run(tmp_path, ids, images, calls)[0] == 0  # the original store file is still there
    assert len(list((tmp_path / "store").iterdir())) == 4


def test_new_or_changed_images_compute_only_those_images(tmp_path):
    ids, images = ["a", "b", "c", "d", "e"], _images(5)
    calls: list = []
    _, out, _ = _run(tmp_path, ids[:4], images[:4], calls)
    first = read_maps(out, with_raw=True)
    # a new image, placed first: only it is computed, the others come from the store in the new order
    order = [4, 2, 0, 1, 3]
    n, out, _ = _run(tmp_path, [ids[k] for k in order], images[order], calls)
    assert n == 1 and calls[-1] == [0]
    got = read_maps(out, with_raw=True)
    assert got.image_ids == ["e", "c", "a", "b", "d"]
    np.testing.assert_array_equal(got.maps[1:], first.maps[[2, 0, 1, 3]])
    np.testing.assert_array_equal(got.raw[1:], first.raw[[2, 0, 1, 3]])
    np.testing.assert_array_equal(got.maps[0], np.sqrt(images[4]))
    # an image whose pixels changed (same id) is computed again; an image dropped is simply not written
    changed = images[:3].copy()
    changed[1] = 1 - changed[1]
    n, out, _ = _run(tmp_path, ids[:3], changed, calls)
    assert n == 1 and calls[-1] == [1]
    np.testing.assert_array_equal(read_maps(out).maps, np.sqrt(changed))


def test_a_killed_job_keeps_its_finished_batches(tmp_path):
    ids, images = [f"im{k}" for k in range(5)], _images(5)
    keys = [image_key(i, img) for i, img in zip(ids, images)]
    store = MapStore(tmp_path / "store", "IG", {}, "m1", TARGET)
    out = tmp_path / "IG.h5"
    calls: list = []
    good = _explainer(images, calls)

    def killed_at_the_second_batch(rows):
        if len(calls) == 1:
            calls.append(list(rows))
            raise KeyboardInterrupt  # as a killed job would stop
        return good(rows)

    with pytest.raises(KeyboardInterrupt):
        compute_maps(out, "IG", {}, "m1", TARGET, ids, keys, killed_at_the_second_batch, store, batch_size=2)
    assert calls == [[0, 1], [2, 3]]
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["store"]  # no output, no temporary file
    assert sorted(store.load(keys)) == sorted(keys[:2])  # the first batch is kept
    calls.clear()
    assert compute_maps(out, "IG", {}, "m1", TARGET, ids, keys, good, store, batch_size=2) == 3
    assert calls == [[2, 3], [4]]
    np.testing.assert_array_equal(read_maps(out).maps, np.sqrt(images))


def test_nan_or_a_wrong_number_of_maps_stops_the_job_and_is_not_stored(tmp_path):
    ids, images = ["a", "b", "c"], _images(3)
    keys = [image_key(i, img) for i, img in zip(ids, images)]
    store = MapStore(tmp_path / "store", "IG", {}, "m1", TARGET)
    out = tmp_path / "IG.h5"
    calls: list = []
    good = _explainer(images, calls)

    def nan_for_c(rows):
        maps, raw = good(rows)
        if 2 in rows:
            maps[rows.index(2), 1, 1] = np.nan
        return maps, raw

    with pytest.raises(FloatingPointError, match="map of image 'c' contains NaN"):
        compute_maps(out, "IG", {}, "m1", TARGET, ids, keys, nan_for_c, store, batch_size=2)
    assert not out.exists()
    assert sorted(store.load(keys)) == sorted(keys[:2])  # the finite first batch only
    with pytest.raises(ValueError, match="3 maps and 3 raw attributions for 1 images"):
        compute_maps(out, "IG", {}, "m1", TARGET, ids, keys, lambda rows: good([0, 1, 2]), store)
    assert not out.exists() and sorted(store.load(keys)) == sorted(keys[:2])
    calls.clear()
    assert compute_maps(out, "IG", {}, "m1", TARGET, ids, keys, good, store) == 1
    assert calls == [[2]]


def test_without_a_store_everything_is_computed_each_time(tmp_path):
    ids, images = ["a", "b"], _images(2)
    keys = [image_key(i, img) for i, img in zip(ids, images)]
    calls: list = []
    for _ in range(2):
        assert compute_maps(tmp_path / "IG.h5", "IG", {}, "m", TARGET, ids, keys, _explainer(images, calls)) == 2
    assert calls == [[0, 1], [0, 1]]
    assert [p.name for p in tmp_path.iterdir()] == ["IG.h5"]


# ------------------------------------------------------------------ randomized maps


def test_randomized_store_target_drops_n_images_only():
    target = {**TARGET, "randomization": {"mode": "independent", "init": "truncated_normal", "n_images": 40}}
    got = randomized_store_target(target)
    assert got == {**TARGET, "randomization": {"mode": "independent", "init": "truncated_normal"}}
    assert target["randomization"]["n_images"] == 40  # the argument is not modified
    other_n = {**target, "randomization": {**target["randomization"], "n_images": 0}}
    assert randomized_store_target(other_n) == got
    for changed in (
        {**target, "seed": 4},
        {**target, "randomization": {**target["randomization"], "mode": "cascading"}},
        {**target, "randomization": {**target["randomization"], "init": "default"}},
    ):
        assert randomized_store_target(changed) != got


def _step_explainer(images: np.ndarray, draws: list[int], calls: list):
    """compute_step(d, k, rows): a map that depends on the draw's seed, the step and the image; records
    (draw seed, step, rows)."""

    def compute_step(d: int, k: int, rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        calls.append((draws[d], k, list(rows)))
        maps = images[rows] ** (1 + k) * (1 + draws[d]) / (2 + draws[d])
        return maps, maps[:, None] - 1

    return compute_step


def _expected(images: np.ndarray, draws: list[int], n_steps: int) -> np.ndarray:
    """D x S x N x H x W maps of _step_explainer."""
    return np.stack([np.stack([images ** (1 + k) * (1 + s) / (2 + s) for k in range(n_steps)]) for s in draws]).astype(
        np.float32
    )


def _run_randomized(tmp_path, ids, images, draws, calls, target=RAND_TARGET, steps=("fc", "block4")):
    out = tmp_path / "out" / "GRAD.h5"
    out.unlink(missing_ok=True)
    store = MapStore(tmp_path / "store", "GRAD", {}, "m1", randomized_store_target(target))
    keys = [image_key(i, img) for i, img in zip(ids, images)]
    compute_step = _step_explainer(images, draws, calls)
    n = compute_randomized_maps(
        out, "GRAD", {}, "m1", target, ids, list(steps), compute_step, draws, keys, store, batch_size=16
    )
    return n, out


def test_randomized_maps_are_reused_per_draw_step_and_image(tmp_path):
    ids, images = ["a", "b", "c"], _images(4)[:3]
    calls: list = []
    n, out = _run_randomized(tmp_path, ids, images, [3], calls)
    assert n == 2 * 3 and calls == [(3, 0, [0, 1, 2]), (3, 1, [0, 1, 2])]
    np.testing.assert_array_equal(read_randomized_maps(out)[2], _expected(images, [3], 2))

    calls.clear()  # one more draw: only that draw's maps are computed
    n, out = _run_randomized(tmp_path, ids, images, [3, 7], calls)
    assert n == 2 * 3 and calls == [(7, 0, [0, 1, 2]), (7, 1, [0, 1, 2])]
    np.testing.assert_array_equal(read_randomized_maps(out)[2], _expected(images, [3, 7], 2))
    with h5py.File(out) as h5:
        assert h5.attrs["draws"] == "[3, 7]"

    calls.clear()  # the draws are known by their seed, not their position
    n, out = _run_randomized(tmp_path, ids, images, [7, 3], calls)
    assert n == 0 and calls == []
    np.testing.assert_array_equal(read_randomized_maps(out)[2], _expected(images, [7, 3], 2))

    calls.clear()  # one more image: only that image, in every draw and step
    ids4, images4 = [*ids, "d"], _images(4)
    n, out = _run_randomized(tmp_path, ids4, images4, [3, 7], calls)
    assert n == 2 * 2 and calls == [(3, 0, [3]), (3, 1, [3]), (7, 0, [3]), (7, 1, [3])]
    got_ids, got_steps, got = read_randomized_maps(out)
    assert got_ids == ids4 and got_steps == ["fc", "block4"]
    np.testing.assert_array_equal(got, _expected(images4, [3, 7], 2))
    with h5py.File(out) as h5:
        np.testing.assert_array_equal(h5["raw"][:], _expected(images4, [3, 7], 2)[:, :, :, None] - 1)

    calls.clear()  # another image subset size reuses; another mode does not
    subset = {**RAND_TARGET, "randomization": {**RAND_TARGET["randomization"], "n_images": 4}}
    assert _run_randomized(tmp_path, ids4, images4, [3, 7], calls, target=subset)[0] == 0
    independent = {**RAND_TARGET, "randomization": {**RAND_TARGET["randomization"], "mode": "independent"}}
    assert _run_randomized(tmp_path, ids4, images4, [3], calls, target=independent)[0] == 2 * 4


def test_a_failing_randomization_step_keeps_the_finished_steps_in_the_store(tmp_path):
    ids, images = ["a", "b"], _images(2)
    keys = [image_key(i, img) for i, img in zip(ids, images)]
    steps = ["fc", "block4", "block3"]
    store = MapStore(tmp_path / "store", "GRAD", {}, "m1", randomized_store_target(RAND_TARGET))
    out = tmp_path / "GRAD.h5"
    calls: list = []
    good = _step_explainer(images, [0], calls)

    def fails_at_step_2(d, k, rows):
        if k == 1:
            raise RuntimeError("boom")
        return good(d, k, rows)

    with pytest.raises(RuntimeError, match="boom"):
        compute_randomized_maps(out, "GRAD", {}, "m1", RAND_TARGET, ids, steps, fails_at_step_2, [0], keys, store)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["store"]
    step1 = [f"draw0/step1-fc/{k}" for k in keys]
    assert sorted(store.load(step1 + [f"draw0/step2-block4/{k}" for k in keys])) == sorted(step1)
    calls.clear()
    assert compute_randomized_maps(out, "GRAD", {}, "m1", RAND_TARGET, ids, steps, good, [0], keys, store) == 4
    assert calls == [(0, 1, [0, 1]), (0, 2, [0, 1])]
    np.testing.assert_array_equal(read_randomized_maps(out)[2], _expected(images, [0], 3))


# ------------------------------------------------------------------ randomization_subset


def _lowest(ids: list[str], n: int, seed: int) -> list[str]:
    """The n ids of the smallest split_uniform hash, in the order of ``ids``."""
    chosen = set(sorted(ids, key=lambda i: split_uniform(f"randomization-images:{i}", seed))[:n])
    return [i for i in ids if i in chosen]


def test_randomization_subset_is_seeded_ordered_and_of_size_n():
    ids = [f"img{k:03d}" for k in range(50)]
    sub = randomization_subset(ids, 10, seed=5)
    assert len(sub) == 10 and len(set(sub)) == 10
    assert sub == [i for i in ids if i in set(sub)]  # original order
    assert randomization_subset(ids, 10, seed=5) == sub
    assert randomization_subset(ids, 10, seed=6) != sub
    assert sub == _lowest(ids, 10, 5)
    shuffled = list(np.random.default_rng(0).permutation(ids))
    again = randomization_subset(shuffled, 10, seed=5)
    assert set(again) == set(sub) and again == [i for i in shuffled if i in set(sub)]  # the order given is kept
    assert randomization_subset(ids, 0, seed=5) == ids
    assert randomization_subset(ids, 50, seed=5) == ids
    assert randomization_subset(ids, 80, seed=5) == ids


def test_new_images_leave_the_randomization_subset_as_it_was_unless_they_hash_lower():
    seed, n = 2, 12

    def rank(i):
        return split_uniform(f"randomization-images:{i}", seed)

    old = [f"img{k:03d}" for k in range(60)]
    new = [f"new{k:03d}" for k in range(20)]
    before = randomization_subset(old, n, seed)
    after = randomization_subset(old + new, n, seed)
    assert after == _lowest(old + new, n, seed)
    entered = [i for i in after if i in new]
    dropped = [i for i in before if i not in after]
    assert 0 < len(entered) < n  # the case is not trivial: some new ids enter, some old ones stay
    assert len(dropped) == len(entered)  # each new id displaces one old id: those of highest hash
    assert sorted(dropped, key=rank) == sorted(before, key=rank)[n - len(dropped) :]
    assert all(rank(i) > max(rank(j) for j in entered) for i in dropped)
    # new ids that all hash higher than every chosen one change nothing
    higher = [i for i in (f"late{k:03d}" for k in range(200)) if rank(i) > max(rank(j) for j in before)][:20]
    assert len(higher) == 20
    assert randomization_subset(old + higher, n, seed) == before
