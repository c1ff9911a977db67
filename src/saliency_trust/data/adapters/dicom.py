"""DICOM pixel reading with pydicom (docs/own-data.md).

The stored values go through the Modality LUT (Rescale Slope/Intercept or a
Modality LUT Sequence) and are mapped to [0, 1]:

- ``bit_depth`` (default): by the full range the stored bits can hold
  (Bits Stored, Pixel Representation) after the Modality LUT, so an 8-bit image
  is divided by 255 as the papers' loaders did and a 12-bit one by 4095;
- ``window``: through the VOI LUT of the file (Window Center/Width or a VOI LUT
  Sequence, pydicom's ``apply_voi_lut``), then by the same range; files without
  one fall back to ``bit_depth``;
- ``minmax``: by the image's own minimum and maximum.

MONOCHROME1 images (bright = low value) are inverted so that bright is always
1. RGB/YBR images are converted to grey. Multi-frame files are refused.
"""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from skimage.color import rgb2gray

INTENSITY_MODES = ("bit_depth", "window", "minmax")


def output_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """Range of the values after the Modality LUT, from the stored bit depth (as pydicom's windowing)."""
    if ds.get("ModalityLUTSequence"):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    bits = int(ds.BitsStored)
    if int(ds.PixelRepresentation) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = sorted((lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)))
    return lo, hi


def read_dicom(path, intensity: str = "bit_depth") -> tuple[np.ndarray, dict]:
    """Read one single-frame DICOM: (H x W float64 image in [0, 1], header fields).

    Raises FileNotFoundError for a missing file and ValueError naming the file
    for anything unreadable or unsupported.
    """
    if intensity not in INTENSITY_MODES:
        raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got '{intensity}'")
    try:
        ds = pydicom.dcmread(path)
    except FileNotFoundError:
        raise
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: not a readable DICOM file ({type(err).__name__}: {err})") from err
    if "PixelData" not in ds:
        raise ValueError(f"{path}: DICOM file has no pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise ValueError(f"{path}: multi-frame DICOM ({frames} frames) is not a radiograph")
    try:
        arr = ds.pixel_array
    except Exception as err:  # decoder plugins raise many types; name the file and the transfer syntax
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise ValueError(f"{path}: cannot decode pixel data (transfer syntax {syntax}): {err}") from err
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        values = apply_modality_lut(arr, ds).astype(np.float64)
        if intensity == "window":
            values = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
        if intensity == "minmax":
            lo, hi = float(values.min()), float(values.max())
        elif intensity == "window" and ds.get("VOILUTSequence"):  # a VOI LUT maps to its own bit range
            lo, hi = 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
        else:
            lo, hi = output_range(ds)
        image = np.zeros_like(values) if hi <= lo else np.clip((values - lo) / (hi - lo), 0.0, 1.0)
        if photometric == "MONOCHROME1":
            image = 1.0 - image
    elif photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT") and arr.ndim == 3:
        image = rgb2gray(arr.astype(np.float64) / float(2 ** int(ds.BitsStored) - 1))  # pydicom returns RGB
    else:
        raise ValueError(f"{path}: unsupported Photometric Interpretation '{photometric}' (shape {arr.shape})")
    if image.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {image.shape}")
    header = {"patient_id": str(ds.get("PatientID", "") or "") or None}
    return image, header
