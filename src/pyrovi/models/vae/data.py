"""Data for the variational autoencoder: the bundled 8x8 digits and readers for larger sets.

**Bundled: the 8x8 handwritten digits** (``pyrovi/data/digits.csv.gz``). 1,797 images of
the digits 0-9, each 8 x 8 pixels whose grey level is an integer from 0 (white) to 16
(black): the preprocessed version of the UCI "Optical Recognition of Handwritten Digits"
data (Alpaydin and Kaynak 1998), in which 32 x 32 bitmaps were divided into 4 x 4 blocks
and the black pixels of each block counted. The file holds the 64 pixel columns
``p0`` ... ``p63`` (row by row), the ``label`` and a fixed ``split``:

==========  ======  ==================================================
split       rows    use
==========  ======  ==================================================
train       1,197   fitting (:func:`load_digits`, the default)
validation  300     choosing sizes, step counts, early stopping
test        300     the final held-out log-likelihood, touched once
==========  ======  ==================================================

The split was drawn once, by ``numpy.random.default_rng(0).permutation(1797)`` (the first
1,197 rows of the permutation train, the next 300 validation, the last 300 test), and is
*stored in the file*: it never depends on a random number generator's version.

:func:`load_digits` returns ``{"x": Tensor (N, 64)}``, the model's only keyword, so that
``vae.model(**data)`` works; the labels (:func:`digit_labels`) are not data of the model,
they colour the latent map afterwards.

**Larger sets, from files the user already has.** Nothing is downloaded, ever.
:func:`load_idx` reads the IDX format of MNIST and Fashion-MNIST (gzip-compressed or
plain), :func:`load_npz` an array from a NumPy ``.npz`` file, and :func:`mnist_data`
turns an IDX image file into ``{"x": Tensor (N, 784)}`` for a Bernoulli (binarised),
categorical (grey levels) or Gaussian VAE.

The IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/)::

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64 (multi-byte types big-endian)
    byte  3     number of dimensions d
    then        d sizes, each a big-endian uint32
    then        the elements, C order, prod(sizes) of them
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import struct
import zipfile
from importlib import resources

import numpy as np
import pandas as pd
import torch

SPLITS = ("train", "validation", "test")
"""The splits of the bundled digits, in file order of first use."""
SPLIT_SIZES = {"train": 1197, "validation": 300, "test": 300}
"""Rows per split of the bundled digits."""
NUM_PIXELS = 64
"""Pixels per bundled digit (8 x 8)."""
NUM_LEVELS = 17
"""Grey levels of a bundled digit's pixel: 0 ... 16."""
BINARY_THRESHOLD = 8
"""``binarize=True`` sets a bundled pixel to 1 where its grey level exceeds this."""

IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX element-type byte -> NumPy dtype (big-endian)."""

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- bundled digits


@functools.cache
def _digits_frame() -> pd.DataFrame:
    raw = resources.files("pyrovi.data").joinpath("digits.csv.gz").read_bytes()
    return pd.read_csv(io.BytesIO(raw), compression="gzip")


def _split_rows(split: str) -> np.ndarray:
    if split not in SPLITS:
        raise ValueError(f"unknown digits split {split!r}; choose one of {', '.join(SPLITS)}")
    return (_digits_frame()["split"] == split).to_numpy()


def load_digits(split: str = "train", binarize: bool = False) -> dict[str, torch.Tensor]:
    """The bundled 8x8 digits as the VAE's data.

    Parameters
    ----------
    split : {"train", "validation", "test"}
        Which fixed split (module docstring): 1,197, 300 or 300 images.
    binarize : bool
        False (default): grey levels 0 ... 16, for ``VAE(64, likelihood="categorical")``.
        True: 1 where the grey level exceeds 8, else 0, for
        ``VAE(64, likelihood="bernoulli")``.

    Returns
    -------
    dict
        ``{"x": Tensor float32 of shape (N, 64)}``, rows in file order.

    Raises
    ------
    ValueError
        If ``split`` is not one of :data:`SPLITS`.
    """
    rows = _split_rows(split)
    pixels = _digits_frame().iloc[:, :NUM_PIXELS].to_numpy()[rows]
    if binarize:
        pixels = pixels > BINARY_THRESHOLD
    return {"x": torch.tensor(pixels, dtype=torch.float32)}


def digit_labels(split: str = "train") -> np.ndarray:
    """The digit (0 ... 9) of each image of ``split``, in the order of :func:`load_digits`.

    Raises
    ------
    ValueError
        If ``split`` is not one of :data:`SPLITS`.
    """
    rows = _split_rows(split)
    return _digits_frame()["label"].to_numpy(dtype=np.int64)[rows]


# --------------------------------------------------------------------------- files


def _read_maybe_gzip(path: PathLike) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{os.fspath(path)}: broken gzip stream ({exc})") from None
    return raw


def load_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (the format of MNIST), gzip-compressed or plain.

    Parameters
    ----------
    path : str or path
        E.g. ``train-images-idx3-ubyte.gz`` (shape (60000, 28, 28)) or
        ``train-labels-idx1-ubyte`` (shape (60000,)).

    Returns
    -------
    numpy.ndarray
        The elements with the file's shape, in native byte order (uint8 for MNIST).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If the file's magic number is not an IDX one (two zero bytes, a
        known type byte), or it is shorter or longer than its header says.
    """
    name = os.fspath(path)
    raw = _read_maybe_gzip(path)
    if len(raw) < 4:
        raise ValueError(f"{name}: truncated IDX file ({len(raw)} bytes, no header)")
    zero, type_byte, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or type_byte not in IDX_TYPES:
        raise ValueError(f"{name}: bad IDX magic number 0x{raw[:4].hex()} (expected "
                         "00 00, a type byte 08/09/0b/0c/0d/0e, the number of dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{name}: truncated IDX header ({ndim} dimensions need {header} "
                         f"bytes, the file has {len(raw)})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_TYPES[type_byte]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "trailing bytes after the data"
        raise ValueError(f"{name}: {problem}: shape {tuple(shape)} of {dtype.name} needs "
                         f"{expected} bytes, the file has {len(raw)}")
    values = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def load_npz(path: PathLike, key: str = "x") -> np.ndarray:
    """Read the array ``key`` from a NumPy ``.npz`` file (no pickled objects).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If the file is not an NPZ archive, or holds no array ``key`` (the
        message lists the keys it holds).
    """
    name = os.fspath(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read {name} as an NPZ file: {exc}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{name}: not an NPZ archive (a single .npy array)")
    with archive:
        if key not in archive.files:
            raise ValueError(f"{name} has no array {key!r}; its keys: "
                             f"{', '.join(archive.files) or '(none)'}")
        return archive[key]


def mnist_data(images_path: PathLike, binarize: bool = True,
               levels: int | None = None) -> dict[str, torch.Tensor]:
    """An IDX image file of MNIST (or Fashion-MNIST) as the VAE's data.

    Parameters
    ----------
    images_path : str or path
        An IDX file of uint8 images, shape (N, height, width), e.g.
        ``train-images-idx3-ubyte.gz``.
    binarize : bool
        True (default): 1 where the intensity exceeds 127, else 0 (static binarisation),
        for ``VAE(784, likelihood="bernoulli")``. False: intensity / 255 in [0, 1], for
        a Gaussian VAE.
    levels : int, optional
        Quantise the intensities 0 ... 255 into ``levels`` grey levels
        ``floor(intensity * levels / 256)`` (0 ... levels - 1), for
        ``VAE(784, likelihood="categorical", num_levels=levels)``. Takes precedence over
        ``binarize``.

    Returns
    -------
    dict
        ``{"x": Tensor float32 of shape (N, height * width)}``.

    Raises
    ------
    ValueError
        If the file is not an IDX file of uint8 images with at least two
        dimensions, or ``levels`` is below 2 or above 256.
    """
    images = load_idx(images_path)
    name = os.fspath(images_path)
    if images.dtype != np.uint8 or images.ndim < 2:
        raise ValueError(f"{name}: expected uint8 images of shape (N, height, width), got "
                         f"{images.dtype.name} of shape {images.shape}")
    flat = images.reshape(images.shape[0], -1).astype(np.int64)
    if levels is not None:
        if not 2 <= levels <= 256:
            raise ValueError(f"levels must lie between 2 and 256, got {levels}")
        values = (flat * levels) // 256
    elif binarize:
        values = flat > 127
    else:
        values = flat / 255.0
    return {"x": torch.tensor(values, dtype=torch.float32)}


__all__ = [
    "BINARY_THRESHOLD", "IDX_TYPES", "NUM_LEVELS", "NUM_PIXELS", "SPLITS", "SPLIT_SIZES",
    "digit_labels", "load_digits", "load_idx", "load_npz", "mnist_data",
]
