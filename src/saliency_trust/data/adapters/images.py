"""Reading source images and masks of any file type (docs/own-data.md).

DICOM files (``.dcm``, ``.dicom``, or no suffix) go through
:func:`saliency_trust.data.adapters.dicom.read_dicom`; PNG, JPEG and TIFF files
through imageio, grey by luminance (``skimage.color.rgb2gray``) and scaled to
[0, 1] by their integer type (``skimage.util.img_as_float``: 8-bit / 255,
16-bit / 65535).
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
from skimage.color import rgb2gray
from skimage.util import img_as_float

from saliency_trust.data.adapters.dicom import read_dicom

DICOM_SUFFIXES = (".dcm", ".dicom", "")


def _read_raster(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        arr = iio.imread(path)
    except Exception as err:  # imageio plugins raise many types; name the file
        raise ValueError(f"{path}: not a readable image ({type(err).__name__}: {err})") from err
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return rgb2gray(img_as_float(arr[..., :3]))
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a grey or RGB image, got an array of shape {arr.shape}")
    return img_as_float(arr)


def read_image(path: str | Path, intensity: str = "bit_depth") -> tuple[np.ndarray, dict]:
    """(H x W float64 image in [0, 1], header fields such as the DICOM PatientID)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        image, header = read_dicom(path, intensity)
    else:
        image, header = _read_raster(path).astype(np.float64), {}
    if not np.isfinite(image).all():
        raise ValueError(f"{path}: image contains NaN or inf")
    return image, header


def read_mask(path: str | Path) -> np.ndarray:
    """A mask image as H x W bool: any non-zero pixel (of any channel) is inside."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mask file not found")
    try:
        arr = iio.imread(path)
    except Exception as err:
        raise ValueError(f"{path}: not a readable mask image ({type(err).__name__}: {err})") from err
    if arr.ndim == 3:
        arr = arr.max(axis=-1)
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D mask, got an array of shape {arr.shape}")
    return arr > 0
