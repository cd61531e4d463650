"""Image files to the uint8 arrays medtune trains on, in whatever valid mode Pillow opens them.

- ``1``, ``L``: grayscale, as they are; ``LA`` / ``La``: grayscale, the alpha channel dropped.
- Palette (``P``, ``PA``), ``RGBA``, ``CMYK``, ``YCbCr`` and the other colour modes: Pillow's conversion
  to RGB, alpha dropped (a palette with transparency goes through RGBA, as Pillow asks).
- 16-bit (``I;16`` and its byte orders), 32-bit integer (``I``) and float (``F``) grayscale: scaled
  to 0..255 by one factor for the whole data set, so that intensities stay comparable between
  images: ``255 / (2**bits - 1)``, ``bits`` the fewest (at least 8) that hold the largest value in
  any of them, so a 12-bit scan stored in 16 bits uses the full 8-bit range and 8-bit values stored
  in 16 bits stay as they are; float images within [0, 1] are scaled by 255. Pillow's own conversion
  to ``L`` clips at 255, which would turn a 16-bit scan almost white. Negative, NaN or infinite
  values are refused.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tuner.errors import ConfigError

GRAY_MODES = ("1", "L", "LA", "La")
DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # one channel, more than 8 bits


def decode_images(paths: list[Path]) -> list[np.ndarray]:
    """Decode to uint8 arrays: grayscale stays (H, W); anything with colour becomes (H, W, 3)."""
    decoded: list[np.ndarray] = []
    deep: list[int] = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
                array = _array(image)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise ConfigError(f"cannot decode image {path} ({error}): the file is corrupt or not an "
                              "image. Replace or remove it.") from error
        if array.dtype != np.uint8:
            _check_deep(array, path)
            deep.append(len(decoded))
        decoded.append(array)
    for index, array in zip(deep, scale_deep([decoded[i] for i in deep]), strict=True):
        decoded[index] = array
    return decoded


def _array(image: Image.Image) -> np.ndarray:
    """One opened image as an array: uint8 (H, W) or (H, W, 3), or a deep mode's own numbers."""
    if image.mode in DEEP_MODES:
        return np.asarray(image)
    if image.mode in GRAY_MODES:
        return np.asarray(image.convert("L"), dtype=np.uint8)
    if image.mode == "PA" or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _check_deep(array: np.ndarray, path: Path) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ConfigError(f"image {path} holds NaN or infinite values; replace or remove it.")
    if array.size and array.min() < 0:
        raise ConfigError(f"image {path} holds negative values (min {array.min()}); medtune reads 0..65535 integers "
                          "or floats within [0, 1]: rescale it, or remove it.")


def scale_deep(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """16-bit, 32-bit and float grayscale images to uint8, by one factor for all of them (see the
    module docstring)."""
    sized = [array for array in arrays if array.size]
    if not sized:
        return [array.astype(np.uint8) for array in arrays]
    top = max(float(array.max()) for array in sized)
    if all(array.dtype.kind == "f" for array in arrays) and top <= 1:
        factor = 255.0
    else:
        factor = 255.0 / (2 ** max(8, math.ceil(math.log2(top + 1))) - 1)
    return [np.rint(array.astype(np.float64) * factor).astype(np.uint8) for array in arrays]
