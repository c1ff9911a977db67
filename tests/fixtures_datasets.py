"""Tiny datasets written in each public dataset's own on-disk format (docs/own-data.md tests).

Each writer returns a :class:`Fixture` with the ground truth the adapter must
recover (labels and original-resolution masks or boxes). Nothing here uses the
adapters' code: the SIIM run-length encoder and the DICOM files are written
independently, from the format descriptions.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CHEXPERT_FINDINGS = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]
FIVE = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Pleural Effusion": "pleural_effusion",
}


@dataclass
class Fixture:
    root: Path
    labels: dict[str, dict[str, int]] = field(default_factory=dict)  # image id -> label -> 0/1
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # image id -> original-size bool mask
    boxes: dict[str, list[tuple]] = field(default_factory=dict)  # image id -> [(rater, x, y, w, h)]
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)  # image id -> original (rows, cols)
    patients: dict[str, str] = field(default_factory=dict)


def write_dicom(
    path: Path,
    arr: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    patient_id: str = "anon",
    uid: str | None = None,
) -> Path:
    """A minimal valid single-frame DX DICOM file (explicit VR little endian)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DX_SOP_CLASS
    ds.SOPClassUID = DX_SOP_CLASS
    ds.PatientID = patient_id
    ds.Modality = "DX"
    ds.set_pixel_data(arr, photometric, bits_stored or arr.dtype.itemsize * 8)
    if uid:
        ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A smooth radiograph-like float image in [0, 1]."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    img = 0.4 + 0.3 * np.sin(3 * xx + rng.uniform(0, 6)) * np.cos(2 * yy) + 0.05 * rng.standard_normal(shape)
    return np.clip(img, 0, 1)


def siim_rle(mask: np.ndarray) -> str:
    """Independent SIIM encoder: column-major scan, each start relative to the end of the previous run."""
    height, width = mask.shape
    out, position, previous_end, run_start = [], 0, 0, None
    for col in range(width):
        for row in range(height):
            inside = bool(mask[row, col])
            if inside and run_start is None:
                run_start = position
            elif not inside and run_start is not None:
                out += [run_start - previous_end, position - run_start]
                previous_end, run_start = position, None
            position += 1
    if run_start is not None:
        out += [run_start - previous_end, position - run_start]
    return " ".join(str(v) for v in out)


def _rect(shape, r0, r1, c0, c1) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


def write_siim(root: Path, n: int = 40, shape: tuple[int, int] = (40, 48), seed: int = 0) -> Fixture:
    """``dicom-images-train/<study>/<series>/<ImageId>.dcm`` and ``train-rle.csv`` (several rows per positive)."""
    rng = np.random.default_rng(seed)
    fx = Fixture(root)
    rows = []
    for i in range(n):
        image_id = f"1.2.276.0.7230010.3.1.4.8323329.{1000 + i}.1517875162.{300000 + i}"
        img = texture(rng, shape)
        positive = i % 2 == 0
        mask = np.zeros(shape, bool)
        if positive:
            regions = [_rect(shape, 3 + i % 5, 12 + i % 5, 4, 10 + i % 7)]
            if i % 4 == 0:  # a second region, its own row
                regions.append(_rect(shape, 25, 33, 30, 30 + 3 + i % 9))
            for region in regions:
                mask |= region
                rows.append((image_id, siim_rle(region)))
        else:
            rows.append((image_id, "-1"))
        write_dicom(
            root / "dicom-images-train" / f"1.2.{i}" / f"1.3.{i}" / f"{image_id}.dcm",
            (img * 255).astype(np.uint8),
            uid=image_id,
            patient_id=f"p{i}",
        )
        fx.labels[image_id] = {"pneumothorax": int(positive)}
        fx.masks[image_id] = mask
        fx.shapes[image_id] = shape
    # A DICOM without a row is not used.
    write_dicom(root / "dicom-images-train" / "x" / "y" / "1.2.999.dcm", np.zeros(shape, np.uint8))
    (root / "train-rle.csv").write_text("ImageId, EncodedPixels\n" + "".join(f"{a}, {b}\n" for a, b in rows))
    return fx


def write_rsna(root: Path, n: int = 40, shape: tuple[int, int] = (64, 64), seed: int = 1) -> Fixture:
    """``stage_2_train_images/<patientId>.dcm``, labels with several box rows, detailed class info."""
    rng = np.random.default_rng(seed)
    fx = Fixture(root)
    labels, info = [], []
    for i in range(n + 6):
        pid = f"{i:04d}a1b2-c3d4-e5f6-{i:012d}"
        kind = i % 2 if i < n else 2  # 0 normal, 1 lung opacity, 2 the class the paper drops
        cls = ["Normal", "Lung Opacity", "No Lung Opacity / Not Normal"][kind]
        if kind == 1:
            boxes = [(8.0 + 2 * (i % 4), 10.0, 16.0, 20.0)] + ([(40.0, 30.0, 12.0, 24.0)] if i % 3 == 0 else [])
            for b in boxes:
                labels.append([pid, *[f"{v:.1f}" for v in b], "1"])
                info.append([pid, cls])
            fx.boxes[pid] = [("truth", *b) for b in boxes]
        else:
            labels.append([pid, "", "", "", "", "0"])
            info.append([pid, cls])
        arr = (texture(rng, shape) * 4095).astype(np.uint16)
        write_dicom(root / "stage_2_train_images" / f"{pid}.dcm", arr, "MONOCHROME2", 12, patient_id=pid)
        if kind != 2:
            fx.labels[pid] = {"pneumonia": int(kind == 1)}
            fx.shapes[pid] = shape
    _write_csv(root / "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height", "Target"], labels)
    _write_csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"], info)
    return fx


def write_mura(
    base: Path, n_patients: int = 16, shape: tuple[int, int] = (32, 32), seed: int = 2, annotate: bool = True
) -> Fixture:
    """``MURA-v1.1/{train,valid}_image_paths.csv`` and ``*_labeled_studies.csv`` (no headers), PNG images,
    and a 3-rater annotation file (boxes and a polygon) for the positive studies of the first patients."""
    rng = np.random.default_rng(seed)
    root = base / "MURA-v1.1"
    fx = Fixture(root)
    paths = {"train": [], "valid": []}
    studies = {"train": [], "valid": []}
    ann = []
    for p in range(n_patients):
        part = "valid" if p % 4 == 3 else "train"
        patient = f"patient{p + 1:05d}"
        body = ["XR_WRIST", "XR_SHOULDER"][p % 2]
        for s, positive in enumerate([p % 2 == 0, p % 3 == 0]):
            study = f"study{s + 1}_{'positive' if positive else 'negative'}"
            study_dir = f"MURA-v1.1/{part}/{body}/{patient}/{study}/"
            studies[part].append([study_dir, str(int(positive))])
            for k in range(2):
                rel = f"{study_dir}image{k + 1}.png"
                img = (texture(rng, shape) * 255).astype(np.uint8)
                if (p + k) % 5 == 0:  # some MURA images are RGB
                    img = np.repeat(img[..., None], 3, axis=2)
                (base / rel).parent.mkdir(parents=True, exist_ok=True)
                iio.imwrite(base / rel, img)
                paths[part].append([rel])
                image_id = f"{part}_{body}_{patient}_{study}_image{k + 1}"
                fx.labels[image_id] = {"abnormal": int(positive)}
                fx.shapes[image_id] = shape
                fx.patients[image_id] = patient
                if annotate and positive and p < 6 and k == 0:
                    # rater A and B overlap; C draws a polygon overlapping A only partly
                    a, b = (4, 4, 12, 10), (8, 6, 12, 10)
                    ann += [[rel, "A", *a, ""], [image_id, "B", *b, ""]]
                    poly = [[20, 20], [30, 20], [30, 30], [20, 30]]
                    ann.append([rel, "C", "", "", "", "", json.dumps(poly)])
                    fx.boxes[image_id] = [("A", *a), ("B", *b), ("C", 20, 20, 10, 10)]
                    votes = (
                        _rect(shape, 4, 14, 4, 16).astype(int)
                        + _rect(shape, 6, 16, 8, 20)
                        + _rect(shape, 20, 30, 20, 30)
                    )
                    fx.masks[image_id] = votes >= 2
    for part in ("train", "valid"):
        _write_csv(root / f"{part}_image_paths.csv", None, paths[part])
        _write_csv(root / f"{part}_labeled_studies.csv", None, studies[part])
    if annotate:
        _write_csv(base / "mura_boxes.csv", ["image", "rater", "x", "y", "width", "height", "polygon"], ann)
    return fx


def write_chexpert(base: Path, n: int = 90, shape: tuple[int, int] = (20, 24), seed: int = 3) -> Fixture:
    """``CheXpert-v1.0-small/{train,valid}.csv`` with the 14 findings (1.0, 0.0, -1.0, blank), JPEG images."""
    rng = np.random.default_rng(seed)
    root = base / "CheXpert-v1.0-small"
    fx = Fixture(root)
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_FINDINGS]
    tables = {"train": [], "valid": []}
    for i in range(n):
        part = "valid" if i % 10 == 9 else "train"
        patient = f"patient{i // 2 + 1:05d}"
        lateral = i % 7 == 6
        view = "view2_lateral" if lateral else "view1_frontal"
        rel = f"CheXpert-v1.0-small/{part}/{patient}/study{i % 2 + 1}/{view}.jpg"
        values = {f: rng.choice(["1.0", "0.0", "", "-1.0"], p=[0.4, 0.3, 0.25, 0.05]) for f in CHEXPERT_FINDINGS}
        uncertain = i % 11 == 5
        if uncertain:
            values["Edema"] = "-1.0"
        elif any(values[f] == "-1.0" for f in FIVE):
            values.update({f: "0.0" for f in FIVE if values[f] == "-1.0"})
        tables[part].append(
            [
                rel,
                "Female",
                "60",
                "Lateral" if lateral else "Frontal",
                "" if lateral else "AP",
                *[values[f] for f in CHEXPERT_FINDINGS],
            ]
        )
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(base / rel, (texture(rng, shape) * 255).astype(np.uint8), extension=".jpg")
        image_id = f"{part}_{patient}_study{i % 2 + 1}_{view}"
        if not lateral and not uncertain:
            fx.labels[image_id] = {FIVE[f]: int(values[f] == "1.0") for f in FIVE}
            fx.patients[image_id] = patient
            fx.shapes[image_id] = shape
    for part, rows in tables.items():
        _write_csv(root / f"{part}.csv", header, rows)
    return fx


def write_generic(root: Path, n: int = 40, shape: tuple[int, int] = (30, 36), seed: int = 4) -> Fixture:
    """``manifest.csv`` (image_id, path, two labels, patient, one box column set), PNG and DICOM images,
    ``masks/{image_id}_lesion.png`` masks, and a ``boxes.csv`` with two raters for label ``marker``."""
    rng = np.random.default_rng(seed)
    fx = Fixture(root)
    rows, box_rows = [], []
    for i in range(n):
        image_id = f"case{i:03d}"
        lesion, marker = int(i % 2 == 0), int(i % 3 == 0)
        img = texture(rng, shape)
        if i % 4 == 1:
            rel = f"dicom/{image_id}.dcm"
            write_dicom(root / "images" / rel, (img * 255).astype(np.uint8))
        else:
            rel = f"png/{image_id}.png"
            (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
            iio.imwrite(root / "images" / rel, (img * 65535).astype(np.uint16))
        mask = np.zeros(shape, bool)
        if lesion:
            mask = _rect(shape, 5, 15, 6, 6 + 4 + i % 6)
            (root / "masks").mkdir(parents=True, exist_ok=True)
            iio.imwrite(root / "masks" / f"{image_id}_lesion.png", (mask * 255).astype(np.uint8))
        box = ["", "", "", ""]
        if marker:
            box = ["2", "3", "6", "5"]
            box_rows += [
                [image_id, "marker", "r1", "20", "18", "8", "8"],
                [image_id, "marker", "r2", "22", "20", "8", "8"],
            ]
            fx.boxes[image_id] = [("truth", 2, 3, 6, 5), ("r1", 20, 18, 8, 8), ("r2", 22, 20, 8, 8)]
        rows.append([image_id, rel, lesion, marker, f"pt{i // 2}", "siteA" if i % 2 else "siteB", *box])
        fx.labels[image_id] = {"lesion": lesion, "marker": marker}
        fx.masks[image_id] = mask
        fx.shapes[image_id] = shape
        fx.patients[image_id] = f"pt{i // 2}"
    _write_csv(
        root / "manifest.csv",
        ["image_id", "path", "has_lesion", "has_marker", "patient", "site", "bx", "by", "bw", "bh"],
        rows,
    )
    _write_csv(root / "boxes.csv", ["image_id", "label", "rater", "x", "y", "width", "height"], box_rows)
    return fx


def _write_csv(path: Path, header: list[str] | None, rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
