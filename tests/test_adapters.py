"""Real-dataset adapters on fixtures written in each dataset's own format (docs/own-data.md)."""

from __future__ import annotations

import shutil

import h5py
import imageio.v3 as iio
import numpy as np
import pandas as pd
import pydicom
import pytest
from fixtures_datasets import siim_rle, write_chexpert, write_dicom, write_generic, write_mura, write_rsna, write_siim
from skimage.transform import resize

from saliency_trust.data.adapters.dicom import read_dicom
from saliency_trust.data.adapters.siim import decode_rle, parse_rle
from saliency_trust.data.canonical import BOX_COLUMNS, load_dataset
from saliency_trust.data.geometry import Geometry, rasterize_box
from saliency_trust.data.prepare import prepare_dataset
from saliency_trust.data.splits import assign_splits

SEED = 7
SPLITS = {"test_fraction": 0.25, "val_fraction": 0.25}
OUTPUTS = ("manifest.csv", "images.h5", "boxes.csv", "skipped.csv")


def run(tmp_path, cfg, name="ds"):
    """Convert with the package entry point; returns (dataset, boxes, skipped)."""
    out = tmp_path / "out"
    prepare_dataset(name, cfg, SEED, *(out / f for f in OUTPUTS), workers=2)
    data = load_dataset(out / "manifest.csv", out / "images.h5")
    boxes = pd.read_csv(out / "boxes.csv", dtype={"image_id": str, "rater": str})
    skipped = pd.read_csv(out / "skipped.csv", dtype=str)
    assert list(boxes.columns) == BOX_COLUMNS and list(skipped.columns) == ["image_id", "where", "reason"]
    return data, boxes, skipped


def nearest(mask, size):
    """Independent expectation: nearest-neighbour resize of a mask (docs/own-data.md)."""
    return resize(mask.astype(float), (size, size), order=0, anti_aliasing=False, preserve_range=True) > 0.5


def box_pixels(box, size, sx=1.0, sy=1.0):
    """Independent expectation: pixels whose centre lies in the scaled box."""
    x, y, w, h = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
    c = np.arange(size) + 0.5
    return ((c[:, None] >= y) & (c[:, None] < y + h)) & ((c[None, :] >= x) & (c[None, :] < x + w))


def no_outputs(tmp_path):
    out = tmp_path / "out"
    return not out.exists() or not any(out.iterdir())


# --- DICOM reading --------------------------------------------------------------------------------


def test_dicom_monochrome2_8bit_is_divided_by_255(tmp_path):
    arr = np.arange(0, 240, dtype=np.uint8).reshape(12, 20)
    image, header = read_dicom(write_dicom(tmp_path / "a.dcm", arr, patient_id="P1"))
    np.testing.assert_allclose(image, arr / 255.0)
    assert header["patient_id"] == "P1"


def test_dicom_monochrome1_is_inverted_by_its_bit_depth(tmp_path):
    arr = np.linspace(0, 4095, 16 * 16).astype(np.uint16).reshape(16, 16)
    image, _ = read_dicom(write_dicom(tmp_path / "m1.dcm", arr, "MONOCHROME1", bits_stored=12))
    np.testing.assert_allclose(image, 1.0 - arr / 4095.0)
    assert image[0, 0] == 1.0 and image[-1, -1] == 0.0  # stored 0 is white in MONOCHROME1


def test_dicom_rescale_slope_intercept_and_signed_pixels(tmp_path):
    arr = np.array([[-2048, -1000, 0], [500, 1000, 2047]], dtype=np.int16)
    path = write_dicom(tmp_path / "ct.dcm", arr, bits_stored=12, slope=2.0, intercept=-1024.0)
    image, _ = read_dicom(path)
    hu = arr * 2.0 - 1024.0
    lo, hi = -2048 * 2.0 - 1024.0, 2047 * 2.0 - 1024.0  # range of 12 signed bits after rescale
    np.testing.assert_allclose(image, (hu - lo) / (hi - lo))
    minmax, _ = read_dicom(path, "minmax")
    np.testing.assert_allclose(minmax, (hu - hu.min()) / (hu.max() - hu.min()))


def test_dicom_window_uses_the_voi_lut(tmp_path):
    arr = np.linspace(0, 4095, 64).astype(np.uint16).reshape(8, 8)
    path = write_dicom(tmp_path / "w.dcm", arr, bits_stored=12, window=(2000.0, 1000.0))
    image, _ = read_dicom(path, "window")
    c, w = 2000.0, 1000.0  # DICOM PS3.3 C.11.2.1.2 linear function, to the 12-bit output range
    expected = np.clip(((arr - (c - 0.5)) / (w - 1) + 0.5), 0, 1)
    np.testing.assert_allclose(image, expected, atol=1e-9)
    assert not np.allclose(image, read_dicom(path, "bit_depth")[0])


def test_dicom_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_dicom(tmp_path / "missing.dcm")
    bad = tmp_path / "corrupt.dcm"
    bad.write_bytes(b"not a dicom at all" * 10)
    with pytest.raises(ValueError, match="corrupt.dcm"):
        read_dicom(bad)
    multi = write_dicom(tmp_path / "multi.dcm", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="multi.dcm.*multi-frame"):
        read_dicom(multi)


# --- geometry ---------------------------------------------------------------------------------------


def test_images_are_resized_with_anti_aliasing_and_masks_by_nearest_neighbour():
    checker = (np.indices((64, 64)).sum(axis=0) % 2).astype(float)
    geo = Geometry(64, 64, 16)
    small = geo.image(checker)
    assert small.dtype == np.float32 and abs(small.mean() - 0.5) < 0.02 and small.std() < 0.05  # no aliasing
    mask = np.zeros((64, 64), bool)
    mask[8:40, 20:28] = True
    np.testing.assert_array_equal(geo.mask(mask), nearest(mask, 16))
    assert set(np.unique(geo.mask(checker > 0))) <= {0, 1}


def test_pad_mode_keeps_the_aspect_ratio_and_shifts_boxes():
    geo = Geometry(20, 40, 32, "pad")
    assert geo.inner_shape == (16, 32) and geo.offset == (8, 0)
    assert geo.box((10, 5, 20, 10)) == (8.0, 12.0, 16.0, 8.0)
    image = geo.image(np.ones((20, 40)))
    assert image[:8].max() == 0 and image[24:].max() == 0 and image[8:24].min() > 0.99


def test_box_rasterization_uses_pixel_centres():
    np.testing.assert_array_equal(rasterize_box((2.0, 3.0, 4.0, 2.0), 10), box_pixels((2, 3, 4, 2), 10))
    np.testing.assert_array_equal(rasterize_box((2.6, 3.4, 1.8, 0.9), 10), box_pixels((2.6, 3.4, 1.8, 0.9), 10))
    assert rasterize_box((4.1, 4.1, 0.2, 0.2), 10).sum() == 1  # smaller than a pixel: its centre pixel


# --- SIIM-ACR ---------------------------------------------------------------------------------------


def siim_cfg(root, **extra):
    return {"source": "siim", "root": str(root), "image_size": 32, "splits": SPLITS, **extra}


@pytest.mark.parametrize("shape", [(7, 5), (16, 16), (40, 48)])
def test_siim_rle_decoder_inverts_an_independent_encoder(shape):
    rng = np.random.default_rng(sum(shape))
    for density in (0.05, 0.5, 0.95):
        mask = rng.random(shape) < density
        mask[-1, -1] = density > 0.5  # runs that end on the last pixel
        np.testing.assert_array_equal(decode_rle(parse_rle(siim_rle(mask), "i", "r"), shape), mask)
    assert parse_rle(" -1", "i", "r") is None


def test_siim_adapter_writes_the_canonical_dataset(tmp_path):
    fx = write_siim(tmp_path / "siim")
    data, boxes, skipped = run(tmp_path, siim_cfg(fx.root))
    man = data.manifest
    assert data.label_names == ["pneumothorax"] and skipped.empty
    assert sorted(man["image_id"]) == sorted(fx.labels) == man["image_id"].tolist()  # DICOM without a row unused
    assert man["split"].tolist() == assign_splits(man["image_id"], SEED, **SPLITS).tolist()
    for i, image_id in enumerate(man["image_id"]):
        assert man["pneumothorax"].iloc[i] == fx.labels[image_id]["pneumothorax"]
        expected = nearest(fx.masks[image_id], 32)
        np.testing.assert_array_equal(data.masks[i, 0], expected)
        assert man["has_mask"].iloc[i] == int(expected.any())
        pixels = pydicom.dcmread(fx.root / man["source_path"].iloc[i]).pixel_array / 255.0
        # uint16 storage: within half a step (0.5 / 65535) of the converted intensities
        np.testing.assert_allclose(
            data.images[i], resize(pixels, (32, 32), anti_aliasing=True), atol=0.5 / 65535 + 1e-7
        )
    assert (man["orig_height"] == 40).all() and (man["orig_width"] == 48).all()
    assert man["source_path"].str.startswith("dicom-images-train/").all()
    two_regions = man["image_id"].iloc[0]  # image 0 has two regions, each its own RLE row
    assert len(boxes[(boxes.image_id == two_regions)]) == 2 and set(boxes.rater) == {"truth"}
    with h5py.File(tmp_path / "out/images.h5") as h5:
        assert h5.attrs["source"] == "siim" and h5["image"].chunks == (1, 32, 32)


@pytest.mark.parametrize(
    "row,needle",
    [
        ("1 2 3", "pairs of start and length"),
        ("5 x 2 2", "not a list of integers"),
        ("0 3 -4 2", "negative start"),
        ("1900 25", "past the 1920 pixels"),
    ],
)
def test_siim_malformed_rle_names_the_row_and_image(tmp_path, row, needle):
    fx = write_siim(tmp_path / "siim", n=8)
    bad_id = next(iter(fx.labels))
    table = fx.root / "train-rle.csv"
    lines = table.read_text().splitlines()
    lines = [ln for ln in lines if not ln.startswith(bad_id)] + [f"{bad_id}, {row}"]
    table.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"train-rle.csv row {len(lines)}: image '{bad_id}': .*{needle}"):
        run(tmp_path, siim_cfg(fx.root))
    assert no_outputs(tmp_path)


def test_siim_problems_stop_the_job_or_are_skipped_and_recorded(tmp_path):
    fx = write_siim(tmp_path / "siim")
    ids = list(fx.labels)
    table = fx.root / "train-rle.csv"
    text = table.read_text() + f"{ids[2]}, -1\n"  # '-1' mixed with runs for a positive image
    text += "1.2.3.no.such.file, -1\n"  # a row without its DICOM file
    text = text.replace(f"{ids[3]}, -1\n", f"{ids[3]}, 1900 40\n")  # a run past the last of 40 x 48 pixels
    table.write_text(text)
    with pytest.raises(ValueError, match=f"'{ids[2]}'.*mixed"):
        run(tmp_path, siim_cfg(fx.root))
    with pytest.raises(FileNotFoundError, match="no.such.file"):
        table.write_text(text.replace(f"{ids[2]}, -1\n", ""))
        run(tmp_path, siim_cfg(fx.root))
    table.write_text(text)
    data, _, skipped = run(tmp_path, siim_cfg(fx.root, on_error="skip"))
    assert set(skipped["image_id"]) == {ids[2], ids[3], "1.2.3.no.such.file"}
    assert skipped["where"].str.startswith("train-rle.csv row").all()
    assert not set(skipped["image_id"]) & set(data.manifest["image_id"])
    assert len(data.manifest) == len(ids) - 2


def test_failure_mid_conversion_leaves_no_partial_output(tmp_path):
    fx = write_siim(tmp_path / "siim", n=60)
    last = sorted(fx.labels)[-1]  # converted last: earlier images are already in the temporary file
    (fx.root / "dicom-images-train/1.2.59/1.3.59" / f"{last}.dcm").write_bytes(b"broken")
    with pytest.raises(ValueError, match=f"image '{last}'.*not a readable DICOM"):
        run(tmp_path, siim_cfg(fx.root))
    assert no_outputs(tmp_path)  # no output and no temporary file


def test_duplicate_image_ids_are_an_error(tmp_path):
    fx = write_siim(tmp_path / "siim", n=6)
    first = sorted((fx.root / "dicom-images-train").rglob("*.dcm"))[0]
    shutil.copy(first, fx.root / "dicom-images-train" / first.name)
    with pytest.raises(ValueError, match=f"duplicate image id '{first.stem}'"):
        run(tmp_path, siim_cfg(fx.root))


def test_max_images_takes_a_stable_subset(tmp_path):
    fx = write_siim(tmp_path / "siim", n=60)
    data, _, _ = run(tmp_path, siim_cfg(fx.root, max_images=30, splits={"test_fraction": 0.2, "val_fraction": 0.2}))
    again, _, _ = run(tmp_path, siim_cfg(fx.root, max_images=30, splits={"test_fraction": 0.2, "val_fraction": 0.2}))
    assert len(data.manifest) == 30 and data.manifest["image_id"].tolist() == again.manifest["image_id"].tolist()


# --- RSNA Pneumonia -----------------------------------------------------------------------------------


def rsna_cfg(root, **extra):
    return {
        "source": "rsna",
        "root": str(root),
        "image_size": 32,
        "splits": {"test_fraction": 0.3, "val_fraction": 0.3},
        **extra,
    }


def test_rsna_adapter_drops_the_class_and_rasterizes_scaled_boxes(tmp_path):
    fx = write_rsna(tmp_path / "rsna", n=50)
    data, boxes, skipped = run(tmp_path, rsna_cfg(fx.root))
    man = data.manifest
    assert man["image_id"].tolist() == sorted(fx.labels) and skipped.empty  # 6 'Not Normal' images dropped
    assert man["pneumonia"].tolist() == [fx.labels[i]["pneumonia"] for i in man["image_id"]]
    assert (man["patient_id"] == man["image_id"]).all()
    for i, pid in enumerate(man["image_id"]):
        expected = np.zeros((32, 32), bool)
        for _, *box in fx.boxes.get(pid, []):
            expected |= box_pixels(box, 32, 0.5, 0.5)  # 64 px -> 32 px
        np.testing.assert_array_equal(data.masks[i, 0], expected)
        got = boxes[boxes.image_id == pid][["x", "y", "width", "height"]].to_numpy()
        want = np.array([[v / 2 for v in b] for _, *b in fx.boxes.get(pid, [])]).reshape(-1, 4)
        np.testing.assert_allclose(got, want)
    assert (man["has_mask"] == man["pneumonia"]).all() and set(boxes.rater) == {"truth"}


@pytest.mark.parametrize(
    "edit,needle,error",
    [
        (lambda r: r.update(x="60.0", width="10.0"), "outside the 64x64", ValueError),
        (lambda r: r.update(width=""), "Target 1 needs x, y, width and height", ValueError),
        (lambda r: r.update(Target="2"), "Target' must be 0 or 1", ValueError),
        (lambda r: r.update(x="abc"), "column 'x' must be a number", ValueError),
    ],
)
def test_rsna_malformed_rows_name_the_row_and_patient(tmp_path, edit, needle, error):
    fx = write_rsna(tmp_path / "rsna", n=12)
    table = fx.root / "stage_2_train_labels.csv"
    df = pd.read_csv(table, dtype=str, keep_default_na=False)
    k = int(np.flatnonzero(df["Target"] == "1")[0])
    row = df.iloc[k].to_dict()
    edit(row)
    df.iloc[k] = pd.Series(row)
    df.to_csv(table, index=False)
    with pytest.raises(error, match=rf"stage_2_train_labels.csv row {k + 2}: image '{row['patientId']}': .*{needle}"):
        run(tmp_path, rsna_cfg(fx.root))


def test_rsna_class_info_must_agree_and_missing_images_are_recorded(tmp_path):
    fx = write_rsna(tmp_path / "rsna", n=50)
    info = fx.root / "stage_2_detailed_class_info.csv"
    df = pd.read_csv(info, dtype=str)
    normal = df.loc[df["class"] == "Normal", "patientId"].iloc[0]
    df.loc[df.patientId == normal, "class"] = "Lung Opacity"
    df.to_csv(info, index=False)
    with pytest.raises(ValueError, match=f"'{normal}': Target 0 contradicts class 'Lung Opacity'"):
        run(tmp_path, rsna_cfg(fx.root))
    missing = sorted(fx.labels)[5]
    (fx.root / "stage_2_train_images" / f"{missing}.dcm").unlink()
    data, _, skipped = run(tmp_path, rsna_cfg(fx.root, on_error="skip"))
    assert set(skipped["image_id"]) == {normal, missing}
    assert "not found" in skipped.set_index("image_id").loc[missing, "reason"]
    assert len(data.manifest) == len(fx.labels) - 2


# --- MURA ----------------------------------------------------------------------------------------------


def mura_cfg(root, **mura):
    return {
        "source": "mura",
        "root": str(root),
        "image_size": 32,
        "mura": {"annotations": "../mura_boxes.csv", **mura},
        "splits": {**SPLITS, "group_by": "patient"},
    }


def test_mura_labels_from_studies_and_consensus_of_two_raters(tmp_path):
    fx = write_mura(tmp_path)
    data, boxes, skipped = run(tmp_path, mura_cfg(fx.root))
    man = data.manifest.set_index("image_id")
    assert sorted(man.index) == sorted(fx.labels) and skipped.empty
    assert all(man.loc[i, "abnormal"] == fx.labels[i]["abnormal"] for i in fx.labels)
    assert all(man.loc[i, "patient_id"] == fx.patients[i] for i in fx.labels)
    assert set(man["body_part"]) == {"XR_WRIST", "XR_SHOULDER"}
    assert man.groupby("patient_id")["split"].nunique().max() == 1  # a patient's images share one split
    keys = data.manifest["patient_id"].drop_duplicates()
    assert dict(zip(keys, assign_splits(keys, SEED, **SPLITS))) == man.groupby("patient_id")["split"].first().to_dict()
    annotated = sorted(fx.masks)
    for pos, image_id in enumerate(data.manifest["image_id"]):
        expected = fx.masks.get(image_id, np.zeros((32, 32), bool))  # 32 px images: the grid is unchanged
        np.testing.assert_array_equal(data.masks[pos, 0], expected)
    assert man.loc[annotated, "has_mask"].all() and man["has_mask"].sum() == len(annotated) == 5
    one = boxes[boxes.image_id == annotated[0]].set_index("rater")
    assert set(one.index) == {"A", "B", "C", "consensus"}
    assert tuple(one.loc["consensus", ["x", "y", "width", "height"]]) == (8, 6, 8, 8)  # A and B overlap
    assert tuple(one.loc["C", ["x", "y", "width", "height"]]) == (20, 20, 10, 10)  # polygon's bounding box
    rgb = data.manifest.index[data.manifest["image_id"] == "train_XR_WRIST_patient00001_study1_positive_image1"][0]
    src = fx.root.parent / data.manifest["source_path"].iloc[rgb]  # listed as MURA-v1.1/train/...
    pixels = iio.imread(src)
    np.testing.assert_allclose(data.images[rgb], (pixels[..., 0] if pixels.ndim == 3 else pixels) / 255.0, atol=1e-3)


def test_mura_single_rater_threshold_unions_and_body_parts_filter(tmp_path):
    fx = write_mura(tmp_path)
    cfg = {**mura_cfg(fx.root, consensus_min_raters=1, body_parts=["XR_WRIST"]), "splits": SPLITS}
    data, _, _ = run(tmp_path, cfg)
    man = data.manifest
    assert set(man["body_part"]) == {"XR_WRIST"}  # annotations of the other body parts are ignored
    image_id = "train_XR_WRIST_patient00001_study1_positive_image1"
    union = np.logical_or.reduce([box_pixels(b[1:], 32) for b in fx.boxes[image_id]])
    np.testing.assert_array_equal(data.masks[int(np.flatnonzero(man["image_id"] == image_id)[0]), 0], union)


def test_mura_annotation_errors(tmp_path):
    fx = write_mura(tmp_path)
    ann = tmp_path / "mura_boxes.csv"
    good = ann.read_text()
    ann.write_text(good + "MURA-v1.1/train/XR_HAND/patient99999/study1_positive/image1.png,A,1,1,2,2,\n")
    n = len(good.splitlines()) + 1
    with pytest.raises(ValueError, match=rf"mura_boxes.csv row {n} .*unknown image"):
        run(tmp_path, mura_cfg(fx.root))
    negative = next(i for i, v in fx.labels.items() if v["abnormal"] == 0)
    ann.write_text(good + f"{negative},A,1,1,2,2,\n")
    with pytest.raises(
        ValueError, match=f"image '{negative}': localization given for label 'abnormal', but the image is negative"
    ):
        run(tmp_path, mura_cfg(fx.root))
    target = sorted(fx.masks)[0]
    ann.write_text(good + f"{target},A,30,1,5,2,\n")
    with pytest.raises(ValueError, match=f"mura_boxes.csv row {n}: image '{target}': box .* outside the 32x32"):
        run(tmp_path, mura_cfg(fx.root))
    ann.write_text(good + f'{target},A,,,,,"[[1, 2], [3]]"\n')
    with pytest.raises(ValueError, match="polygon must be a JSON list"):
        run(tmp_path, mura_cfg(fx.root))


def test_mura_study_labels_are_checked(tmp_path):
    fx = write_mura(tmp_path, annotate=False)
    studies = fx.root / "train_labeled_studies.csv"
    lines = studies.read_text().splitlines()
    study = lines[0].split(",")[0]
    studies.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(
        ValueError, match=rf"train_image_paths.csv row 1: image '.*': study '{study.rstrip('/')}/' is not in"
    ):
        run(tmp_path, mura_cfg(fx.root, annotations=None))
    flipped = lines[0].rsplit(",", 1)[0] + ("," + str(1 - int(lines[0][-1])))
    studies.write_text("\n".join([flipped, *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="contradicts its label"):
        run(tmp_path, mura_cfg(fx.root, annotations=None))
    paths = fx.root / "train_image_paths.csv"
    studies.write_text("\n".join(lines) + "\n")
    paths.write_text(paths.read_text() + paths.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="duplicate image path"):
        run(tmp_path, mura_cfg(fx.root, annotations=None))


# --- CheXpert ------------------------------------------------------------------------------------------


def chexpert_cfg(root, **chexpert):
    return {
        "source": "chexpert",
        "root": str(root),
        "image_size": 16,
        "chexpert": chexpert,
        "splits": {"test_fraction": 0.3, "val_fraction": 0.3},
    }


def test_chexpert_frontal_five_findings_uncertain_dropped_blank_negative(tmp_path):
    fx = write_chexpert(tmp_path)
    data, boxes, skipped = run(tmp_path, chexpert_cfg(fx.root))
    man = data.manifest.set_index("image_id")
    assert data.label_names == ["atelectasis", "cardiomegaly", "consolidation", "edema", "pleural_effusion"]
    assert sorted(man.index) == sorted(fx.labels) and skipped.empty and boxes.empty
    for image_id, labels in fx.labels.items():
        assert man.loc[image_id, data.label_names].to_dict() == labels
    assert not data.masks.any() and (man["has_mask"] == 0).all()
    assert not man.index.str.contains("lateral").any() and (man["view"] == "AP").all()
    assert man["source_path"].str.startswith("CheXpert-v1.0-small/train/").sum() > 0  # as listed in the CSVs


def test_chexpert_uncertain_policies_and_all_negative_cohort(tmp_path):
    fx = write_chexpert(tmp_path)
    ones, _, _ = run(tmp_path, chexpert_cfg(fx.root, uncertain="ones"))
    extra = sorted(set(ones.manifest["image_id"]) - set(fx.labels))
    assert extra and ones.manifest.set_index("image_id").loc[extra, "edema"].eq(1).all()
    cohort, _, _ = run(tmp_path, chexpert_cfg(fx.root, drop_all_negative=True))
    assert cohort.labels().max(axis=1).min() == 1
    assert len(cohort.manifest) == sum(any(v.values()) for v in fx.labels.values())


def test_chexpert_bad_value_and_duplicate_path(tmp_path):
    fx = write_chexpert(tmp_path)
    table = fx.root / "train.csv"
    df = pd.read_csv(table, dtype=str, keep_default_na=False)
    k = int(np.flatnonzero(df["Frontal/Lateral"] == "Frontal")[3])
    df.loc[k, "Cardiomegaly"] = "2.0"
    df.to_csv(table, index=False)
    with pytest.raises(
        ValueError, match=rf"train.csv row {k + 2}: image '.*': column 'Cardiomegaly' must be 1, 0, -1 or blank"
    ):
        run(tmp_path, chexpert_cfg(fx.root))
    df.loc[k, "Cardiomegaly"] = "1.0"
    pd.concat([df, df.iloc[[k]]]).to_csv(table, index=False)
    with pytest.raises(ValueError, match=rf"duplicate Path .* in rows \[{k + 2}, {len(df) + 2}\]"):
        run(tmp_path, chexpert_cfg(fx.root))


# --- generic -------------------------------------------------------------------------------------------


def generic_cfg(root, **generic):
    opts = {
        "images_dir": "images",
        "labels": {"has_lesion": "lesion", "has_marker": "marker"},
        "patient_column": "patient",
        "extra_columns": ["site"],
        "masks_dir": "masks",
        "box_columns": {"x": "bx", "y": "by", "width": "bw", "height": "bh"},
        "box_label": "marker",
        "boxes_csv": "boxes.csv",
    }
    return {
        "source": "generic",
        "root": str(root),
        "image_size": 32,
        "splits": {**SPLITS, "group_by": "patient"},
        "generic": {**opts, **generic},
    }


def test_generic_manifest_masks_boxes_and_raters(tmp_path):
    fx = write_generic(tmp_path / "gen")
    data, boxes, skipped = run(tmp_path, generic_cfg(fx.root))
    man = data.manifest
    assert data.label_names == ["lesion", "marker"] and skipped.empty
    assert man["image_id"].tolist() == sorted(fx.labels)
    assert man["site"].tolist() == ["siteB" if int(i[4:]) % 2 == 0 else "siteA" for i in man["image_id"]]
    sx, sy = 32 / 36, 32 / 30  # 30 x 36 images stretched to 32 x 32
    for i, image_id in enumerate(man["image_id"]):
        assert [man["lesion"].iloc[i], man["marker"].iloc[i]] == [
            fx.labels[image_id]["lesion"],
            fx.labels[image_id]["marker"],
        ]
        np.testing.assert_array_equal(data.masks[i, 0], nearest(fx.masks[image_id], 32))
        expected = np.zeros((32, 32), bool)
        for _, *box in fx.boxes.get(image_id, []):
            expected |= box_pixels(box, 32, sx, sy)
        np.testing.assert_array_equal(data.masks[i, 1], expected)
    assert set(boxes.rater) == {"truth", "r1", "r2"}
    dicom_row = int(np.flatnonzero(man["source_path"].str.endswith(".dcm"))[0])
    assert 0 < data.images[dicom_row].mean() < 1  # DICOM and 16-bit PNG sources mixed
    consensus, cboxes, _ = run(tmp_path, generic_cfg(fx.root, consensus_min_raters=2))
    marked = int(np.flatnonzero(consensus.manifest["marker"] == 1)[0])
    np.testing.assert_array_equal(
        consensus.masks[marked, 1], box_pixels((20, 18, 8, 8), 32, sx, sy) & box_pixels((22, 20, 8, 8), 32, sx, sy)
    )
    assert "consensus" in set(cboxes.rater)


def test_generic_errors_name_the_item(tmp_path):
    fx = write_generic(tmp_path / "gen")
    manifest = fx.root / "manifest.csv"
    good = manifest.read_text()
    manifest.write_text(good + good.splitlines()[3] + "\n")
    with pytest.raises(ValueError, match=r"manifest.csv: duplicate image id 'case002' in rows \[4, 42\]"):
        run(tmp_path, generic_cfg(fx.root))
    manifest.write_text(good)
    boxes = fx.root / "boxes.csv"
    boxes.write_text(boxes.read_text() + "nobody,marker,r1,1,1,2,2\n")
    with pytest.raises(ValueError, match="unknown image id 'nobody'"):
        run(tmp_path, generic_cfg(fx.root))
    boxes.write_text(boxes.read_text().replace("nobody,marker,r1,1,1,2,2\n", ""))
    iio.imwrite(fx.root / "masks/case000_lesion.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"image 'case000': mask for 'lesion' has shape \(10, 10\)"):
        run(tmp_path, generic_cfg(fx.root))
    (fx.root / "masks/case000_lesion.png").unlink()
    (fx.root / "images/png/case002.png").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.csv row 4: image 'case002': image file .* not found"):
        run(tmp_path, generic_cfg(fx.root))
    data, _, skipped = run(tmp_path, {**generic_cfg(fx.root), "on_error": "skip"})
    assert skipped["image_id"].tolist() == ["case002"] and "case002" not in set(data.manifest["image_id"])
    with pytest.raises(FileNotFoundError, match="no mask file named like"):
        run(tmp_path, generic_cfg(fx.root, mask_pattern="{image_id}.tif"))


def test_generic_pad_mode_places_boxes_with_the_image(tmp_path):
    fx = write_generic(tmp_path / "gen")
    cfg = {**generic_cfg(fx.root, masks_dir=None, boxes_csv=None), "resize": "pad", "on_error": "skip"}
    data, boxes, _ = run(tmp_path, cfg)
    geo = Geometry(30, 36, 32, "pad")
    marked = data.manifest.index[data.manifest["marker"] == 1][0]
    image_id = data.manifest["image_id"].iloc[marked]
    row = boxes[(boxes.image_id == image_id)].iloc[0]
    np.testing.assert_allclose(row[["x", "y", "width", "height"]].to_numpy(float), geo.box((2, 3, 6, 5)), atol=1e-3)
    assert data.images[marked][: geo.offset[0]].max() == 0  # black padding rows


def test_truncated_images_and_boxes_outside_the_image_stop_naming_the_image_or_are_skipped(tmp_path):
    """docs/troubleshooting.md: an unreadable or truncated image (PNG or DICOM) and a box outside its image stop the job naming
    the image and its row, leaving no output; with ``on_error: skip`` they are dropped and listed in skipped.csv."""
    fx = write_generic(tmp_path / "gen")
    for rel in ("png/case002.png", "dicom/case005.dcm"):  # a copy cut short
        path = fx.root / "images" / rel
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(
        ValueError,
        match=r"manifest.csv row 4: image 'case002': .*case002.png: not a readable image "
        r"\(OSError: image file is truncated\)",
    ):
        run(tmp_path, generic_cfg(fx.root))
    assert no_outputs(tmp_path)
    boxes = fx.root / "boxes.csv"
    boxes.write_text(boxes.read_text() + "case009,marker,r3,30,20,10,8\n")  # x + width = 40 > 36 pixels
    data, _, skipped = run(tmp_path, {**generic_cfg(fx.root), "on_error": "skip"})
    assert skipped["image_id"].tolist() == ["case002", "case005", "case009"]
    reasons = dict(zip(skipped["image_id"], skipped["reason"]))
    assert "truncated" in reasons["case002"] and "case005.dcm" in reasons["case005"]
    assert reasons["case009"] == "box x=30, y=20, width=10, height=8 lies outside the 36x30 (WxH) image"
    assert not {"case002", "case005", "case009"} & set(data.manifest["image_id"])
