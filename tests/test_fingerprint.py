"""Fingerprints of the parts of a canonical dataset each stage reads (saliency_trust.data.fingerprint,
docs/new-data.md): each part changes exactly when what it covers changes.

Small canonical datasets are written with the package's own writers (write_dataset, prepare_synthetic), edited
one thing at a time, and fingerprinted again; counts are checked against the manifest by hand.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from saliency_trust.data.canonical import write_dataset
from saliency_trust.data.fingerprint import dataset_fingerprints, read_fingerprint, write_fingerprints
from saliency_trust.data.prepare import prepare_synthetic
from saliency_trust.data.splits import assign_splits
from saliency_trust.data.synthetic import SyntheticSpec, generate_dataset

PARTS = ("trainval", "trainval_masks", "trainval_boxes", "explained")
SPLITS = {"test_fraction": 0.3, "val_fraction": 0.2}
TEXT = re.compile(r"(\d+) images, sha256 ([0-9a-f]{12})")


@dataclass
class Data:
    manifest: pd.DataFrame
    images: np.ndarray
    masks: np.ndarray
    boxes: pd.DataFrame
    label_names: list[str]

    def copy(self) -> Data:
        return Data(self.manifest.copy(), self.images.copy(), self.masks.copy(), self.boxes.copy(), self.label_names)

    def row(self, split: str, positive: bool) -> int:
        """The first image of ``split`` that is positive (or negative) for the first label."""
        m = self.manifest
        return int(np.flatnonzero((m["split"] == split) & ((m[self.label_names[0]] > 0) == positive))[0])


@pytest.fixture(scope="module")
def base() -> Data:
    spec = SyntheticSpec(n_images=60, image_size=16, raters=3)
    manifest, images, masks, boxes = generate_dataset(spec, seed=1)
    manifest.insert(1, "split", assign_splits(manifest["image_id"], 1, **SPLITS))
    return Data(manifest, images, masks, boxes, spec.label_names)


def _fingerprints(tmp_path, data: Data, name: str = "d") -> dict:
    folder = tmp_path / name
    folder.mkdir()
    files = [folder / "manifest.csv", folder / "images.h5", folder / "boxes.csv"]
    write_dataset(data.manifest, data.images, data.masks, data.boxes, data.label_names, *files, "synthetic")
    return dataset_fingerprints(*files)


def _changed(a: dict, b: dict) -> set[str]:
    assert a["label_names"] == b["label_names"]
    return {part for part in PARTS if a[part] != b[part]}


def _prepare(tmp_path, name: str, **synthetic) -> tuple[dict, pd.DataFrame]:
    """prepare_synthetic of a tiny benchmark: (the fingerprints file's content, the manifest written)."""
    folder = tmp_path / name
    cfg = {"synthetic": {"n_images": 60, "image_size": 16, "raters": 3, **synthetic}, "splits": SPLITS}
    files = [folder / "manifest.csv", folder / "images.h5", folder / "boxes.csv"]
    prepare_synthetic(cfg, 1, *files, fingerprints_path=folder / "fingerprints.json")
    written = json.loads((folder / "fingerprints.json").read_text())
    assert written == dataset_fingerprints(*files)
    return written, pd.read_csv(files[0], dtype={"image_id": str})


# ------------------------------------------------------------------ texts and counts


def test_fingerprints_are_reproducible_and_their_texts_count_the_images(tmp_path, base):
    first = _fingerprints(tmp_path, base, "a")
    assert _fingerprints(tmp_path, base.copy(), "b") == first
    m = base.manifest
    n_trainval = int((m["split"] != "test").sum())
    n_explained = int(((m["split"] == "test") & (m["abnormal"] == 1)).sum())
    assert 0 < n_explained < int((m["split"] == "test").sum()) < len(m)  # negatives in test: not explained
    assert list(first["explained"]) == ["abnormal"] == first["label_names"]
    for part, n in (
        (first["trainval"], n_trainval),
        (first["trainval_masks"], n_trainval),
        (first["trainval_boxes"], n_trainval),
        (first["explained"]["abnormal"], n_explained),
    ):
        assert part["images"] == n
        assert TEXT.fullmatch(part["text"]), part["text"]
        assert part["text"] == f"{n} images, sha256 {part['sha256'][:12]}"
        assert re.fullmatch(r"[0-9a-f]{64}", part["sha256"])
    assert len({first[p]["sha256"] for p in PARTS[:3]} | {first["explained"]["abnormal"]["sha256"]}) == 4


def test_write_and_read_fingerprint(tmp_path):
    path = tmp_path / "data" / "fingerprints.json"
    assert read_fingerprint(path, "trainval") == "pending"  # the data preparation has not run yet
    assert read_fingerprint(path, "explained", "nodule") == "pending"
    parts, manifest = _prepare(tmp_path, "multi", multi_label=True)
    assert parts["label_names"] == ["nodule", "opacity"] == list(parts["explained"])
    # the same file, written by write_fingerprints from the canonical files
    folder = tmp_path / "multi"
    again = write_fingerprints(folder / "manifest.csv", folder / "images.h5", folder / "boxes.csv", path)
    assert again == parts and json.loads(path.read_text()) == parts
    test = manifest["split"] == "test"
    for label in ("nodule", "opacity"):
        n = int((test & (manifest[label] == 1)).sum())
        text = read_fingerprint(path, "explained", label)
        assert TEXT.fullmatch(text) and text.startswith(f"{n} images, ")
    assert read_fingerprint(path, "explained", "nodule") != read_fingerprint(path, "explained", "opacity")
    assert read_fingerprint(path, "explained") == read_fingerprint(path, "explained", "nodule")  # the first label
    with pytest.raises(KeyError, match="label 'abnormal' is not one of"):
        read_fingerprint(path, "explained", "abnormal")
    n_trainval = int((~test).sum())
    for part in ("trainval", "trainval_masks", "trainval_boxes"):
        assert read_fingerprint(path, part) == parts[part]["text"]
        assert read_fingerprint(path, part).startswith(f"{n_trainval} images, sha256 ")


def test_image_ids_out_of_step_with_the_manifest_are_refused(tmp_path, base):
    _fingerprints(tmp_path, base)
    folder = tmp_path / "d"
    manifest = pd.read_csv(folder / "manifest.csv", dtype={"image_id": str})
    manifest.iloc[[0, 1]] = manifest.iloc[[1, 0]].to_numpy()  # two rows swapped
    manifest.to_csv(folder / "manifest.csv", index=False)
    with pytest.raises(ValueError, match="image ids do not match"):
        dataset_fingerprints(folder / "manifest.csv", folder / "images.h5", folder / "boxes.csv")


# ------------------------------------------------------------------ each part changes when it should


def test_test_image_pixels_change_explained_only_and_only_for_a_positive_image(tmp_path, base):
    ref = _fingerprints(tmp_path, base, "ref")
    positive = base.copy()
    k = positive.row("test", True)
    positive.images[k, 3, 4] = 1 - positive.images[k, 3, 4]
    assert _changed(ref, _fingerprints(tmp_path, positive, "positive")) == {"explained"}
    negative = base.copy()  # a negative test image is explained by no map
    k = negative.row("test", False)
    negative.images[k] = negative.images[k] * 0.5
    assert _changed(ref, _fingerprints(tmp_path, negative, "negative")) == set()


def test_a_training_image_label_or_pixels_change_trainval_only(tmp_path, base):
    ref = _fingerprints(tmp_path, base, "ref")
    label = base.copy()
    k = label.row("train", False)
    label.manifest.loc[k, "abnormal"] = 1
    assert _changed(ref, _fingerprints(tmp_path, label, "label")) == {"trainval"}
    for split in ("train", "val"):
        pixels = base.copy()
        k = pixels.row(split, True)
        pixels.images[k, 0, 0] = pixels.images[k, 0, 0] + 1e-3
        assert _changed(ref, _fingerprints(tmp_path, pixels, f"pixels-{split}")) == {"trainval"}, split
    moved = base.copy()  # from train to val: a classifier sees another training set
    moved.manifest.loc[moved.row("train", True), "split"] = "val"
    assert _changed(ref, _fingerprints(tmp_path, moved, "moved")) == {"trainval"}


def test_masks_change_trainval_masks_only(tmp_path, base):
    ref = _fingerprints(tmp_path, base, "ref")
    train = base.copy()
    k = train.row("train", True)
    train.masks[k, 0, 0, 0] = 1 - train.masks[k, 0, 0, 0]
    assert _changed(ref, _fingerprints(tmp_path, train, "train")) == {"trainval_masks"}
    test = base.copy()  # the masks of the test images are read by the scores, not by a trained model
    k = test.row("test", True)
    test.masks[k, 0, 0, 0] = 1 - test.masks[k, 0, 0, 0]
    assert _changed(ref, _fingerprints(tmp_path, test, "test")) == set()


def test_a_new_raters_box_changes_trainval_boxes_only(tmp_path, base):
    ref = _fingerprints(tmp_path, base, "ref")
    boxes = base.boxes

    def with_box(image_id: str) -> pd.DataFrame:
        row = pd.DataFrame([[image_id, "abnormal", "9", 1, 2, 3, 4]], columns=boxes.columns)
        return pd.concat([boxes, row], ignore_index=True)

    train = base.copy()
    train.boxes = with_box(base.manifest["image_id"][base.row("train", True)])
    assert _changed(ref, _fingerprints(tmp_path, train, "train")) == {"trainval_boxes"}
    test = base.copy()
    test.boxes = with_box(base.manifest["image_id"][base.row("test", True)])
    assert _changed(ref, _fingerprints(tmp_path, test, "test")) == set()
    shuffled = base.copy()  # the rows' order in boxes.csv is no change
    shuffled.boxes = boxes.sample(frac=1.0, random_state=0).reset_index(drop=True)
    assert not shuffled.boxes.equals(boxes)
    assert _changed(ref, _fingerprints(tmp_path, shuffled, "shuffled")) == set()


def test_one_more_synthetic_rater_changes_the_boxes_only(tmp_path):
    three, m3 = _prepare(tmp_path, "three", raters=3)
    four, m4 = _prepare(tmp_path, "four", raters=4)
    pd.testing.assert_frame_equal(m3, m4)
    assert _changed(three, four) == {"trainval_boxes"}
    boxes = pd.read_csv(tmp_path / "four" / "boxes.csv", dtype={"rater": str})
    assert "4" in set(boxes["rater"])


def test_synthetic_test_images_add_test_images_only(tmp_path):
    before, m0 = _prepare(tmp_path, "before")
    after, m1 = _prepare(tmp_path, "after", test_images=20)
    new = m1[m1["image_id"].str.startswith("syntest")]
    assert new["image_id"].tolist() == [f"syntest{k:06d}" for k in range(20)]
    assert (new["split"] == "test").all()
    pd.testing.assert_frame_equal(m1.iloc[: len(m0)], m0)  # the other images keep their rows and splits
    assert _changed(before, after) == {"explained"}
    n_new = int((new["abnormal"] == 1).sum())
    assert 0 < n_new < 20
    assert after["explained"]["abnormal"]["images"] == before["explained"]["abnormal"]["images"] + n_new
    assert after["trainval"]["text"] == before["trainval"]["text"]
