"""Datasets for `reparam-zoo compare`: Fashion-MNIST / MNIST (IDX files), the embedded digits,
CIFAR-10 batches, image folders.

Nothing is downloaded. The default (``auto``) is Fashion-MNIST where it is installed (Debian's
``dataset-fashion-mnist`` puts the four IDX files under /usr/share/datasets/fashion-mnist;
``$FASHION_MNIST_DIR`` or ``fashion-mnist:DIR`` point elsewhere): 60,000 training and 10,000 test
images. Otherwise scikit-learn's handwritten digits (1,797 8x8 grey images, shipped inside the
package), upsampled to the net's input size, with a fixed 80/20 train/validation split.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class DataError(ValueError):
    """A dataset argument that cannot be loaded (the message is one line)."""


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # (N, C, H, W) float32, normalised per channel
    train_y: torch.Tensor  # (N,) int64
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    def limit(self, n: int | None) -> "Dataset":
        if not n:
            return self
        return Dataset(self.name, self.train_x[:n], self.train_y[:n], self.val_x, self.val_y, self.num_classes)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def _split(x: torch.Tensor, y: torch.Tensor, val_fraction: float = 0.2, seed: int = 0):
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(len(x) * val_fraction))
    return x[perm[n_val:]], y[perm[n_val:]], x[perm[:n_val]], y[perm[:n_val]]


def _finish(name, train_x, train_y, val_x, val_y, size, num_classes=None, limit: int | None = None) -> Dataset:
    if limit:  # before resizing and normalising: a limited run never holds the whole resized set
        train_x, train_y = train_x[:limit], train_y[:limit]
    train_x, val_x = _resize(train_x, size), _resize(val_x, size)
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    n = int(max(train_y.max(), val_y.max())) + 1 if num_classes is None else num_classes
    return Dataset(name, ((train_x - mean) / std).contiguous(), train_y, ((val_x - mean) / std).contiguous(), val_y, n)


def load_digits(size: int, limit: int | None = None) -> Dataset:
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:  # pragma: no cover - a declared dependency
        raise DataError("the embedded digits data needs scikit-learn: pip install scikit-learn") from None
    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    return _finish("digits", *_split(x, y), size, 10, limit)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a data error
        raise DataError(f"cifar10: cannot read {path}: {exc.__class__.__name__}") from None


def load_cifar10(root: Path, size: int, limit: int | None = None) -> Dataset:
    """The standard python-pickle CIFAR-10 batches: data_batch_1..5 and test_batch."""
    base = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    files = [base / f"data_batch_{i}" for i in range(1, 6)] + [base / "test_batch"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"cifar10: {base} lacks {', '.join(missing)} (expected the python-pickle batches)")

    def batch(path):
        d = _unpickle(path)
        if b"data" not in d or b"labels" not in d:
            raise DataError(f"cifar10: {path} is not a CIFAR-10 batch (no data/labels)")
        x = torch.tensor(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32), dtype=torch.float32) / 255
        return x, torch.tensor(d[b"labels"], dtype=torch.int64)

    parts = [batch(f) for f in files[:5]]
    tx, ty = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    vx, vy = batch(files[5])
    return _finish("cifar10", tx, ty, vx, vy, size, 10, limit)


def _read_folder(root: Path, classes: list[str], size: int):
    from PIL import Image

    xs, ys = [], []
    for label, cls in enumerate(classes):
        for path in sorted((root / cls).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB").resize((size, size))
                    xs.append(torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1) / 255)
            except Exception as exc:  # noqa: BLE001
                raise DataError(f"imagefolder: cannot read {path}: {exc.__class__.__name__}") from None
            ys.append(label)
    if not xs:
        raise DataError(f"imagefolder: no images under {root}")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


def load_imagefolder(root: Path, size: int, limit: int | None = None) -> Dataset:
    """``root/<class>/<image>`` (split 80/20), or ``root/train/<class>`` and ``root/val/<class>``."""
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        if not classes:
            raise DataError(f"imagefolder: {root / 'train'} has no class folders")
        tx, ty = _read_folder(root / "train", classes, size)
        vx, vy = _read_folder(root / "val", classes, size)
        return _finish("imagefolder", tx, ty, vx, vy, size, len(classes), limit)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError(f"imagefolder: {root} needs one sub-folder per class (found {len(classes)})")
    x, y = _read_folder(root, classes, size)
    return _finish("imagefolder", *_split(x, y), size, len(classes), limit)


#: where the Debian packages install the IDX files (``dpkg -L dataset-fashion-mnist``)
IDX_DIRS = {"fashion-mnist": ("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"),
            "mnist": ("MNIST_DIR", "/usr/share/datasets/mnist")}
IDX_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "val_x": "t10k-images-idx3-ubyte", "val_y": "t10k-labels-idx1-ubyte"}
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzip-compressed or raw: magic number, dimensions and size checked."""
    import gzip

    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:  # unreadable, or a truncated / corrupt gzip stream
        raise DataError(f"{path}: cannot read it ({exc.__class__.__name__}: {str(exc)[:100]})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or not 1 <= raw[3] <= 4:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    want = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    if not want:
        raise DataError(f"{path}: the IDX file holds no values (dimensions {dims})")
    body = raw[4 + 4 * ndim:]
    if len(body) != want:
        raise DataError(f"{path}: the header says {dims} values ({want:,} bytes) but the file holds {len(body):,} "
                        "bytes (truncated or corrupt)")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def idx_dir(kind: str, where: str | None = None) -> Path:
    """The folder of an IDX dataset: the given one, else ``$FASHION_MNIST_DIR`` / ``$MNIST_DIR``, else
    where the Debian package installs it. A one-line DataError says how to get it when it is missing."""
    import os

    env, debian = IDX_DIRS[kind]
    if not where and os.environ.get(env):  # set explicitly: it must be right, no silent fallback
        where = os.environ[env]
    candidates = [Path(where)] if where else [Path(debian)]
    for root in candidates:
        if all(_idx_file(root, name) is not None for name in IDX_FILES.values()):
            return root
    if where:
        raise DataError(f"{kind}: {where} lacks the IDX files ({', '.join(IDX_FILES.values())}, .gz or raw)")
    package = "dataset-fashion-mnist" if kind == "fashion-mnist" else "an MNIST package"
    raise DataError(f"{kind} is not installed: apt-get install {package} (Debian/Ubuntu), or set ${env} or pass "
                    f"--data {kind}:DIR for a folder with the four IDX files")


def _idx_file(root: Path, name: str) -> Path | None:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    return None


def load_idx(kind: str, size: int, where: str | None = None, limit: int | None = None) -> Dataset:
    """Fashion-MNIST or MNIST from IDX files: the official 60,000 training and 10,000 test images (the test
    set is the validation set), 28x28 grey, resized to ``size``."""
    root = idx_dir(kind, where)
    arrays = {key: read_idx(_idx_file(root, name)) for key, name in IDX_FILES.items()}
    for split in ("train", "val"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{kind}: {root}: {split} images {list(x.shape)} and labels {list(y.shape)} do not match")
        if len(y) and (int(y.min()) < 0 or int(y.max()) > 9):
            raise DataError(f"{kind}: {root}: labels outside 0..9")
    if limit:
        arrays["train_x"], arrays["train_y"] = arrays["train_x"][:limit], arrays["train_y"][:limit]
    tx = torch.from_numpy(arrays["train_x"].astype(np.float32)).unsqueeze(1) / 255
    vx = torch.from_numpy(arrays["val_x"].astype(np.float32)).unsqueeze(1) / 255
    ty = torch.from_numpy(arrays["train_y"].astype(np.int64))
    vy = torch.from_numpy(arrays["val_y"].astype(np.int64))
    return _finish(kind, tx, ty, vx, vy, size, 10)


def default_data() -> str:
    """``fashion-mnist`` when it is installed (Debian package or ``$FASHION_MNIST_DIR``), else ``digits``."""
    import os

    try:
        idx_dir("fashion-mnist")
        return "fashion-mnist"
    except DataError:
        if os.environ.get(IDX_DIRS["fashion-mnist"][0]):  # asked for explicitly: an error if it is wrong
            raise
        return "digits"


def load_data(arg: str, size: int, limit: int | None = None) -> Dataset:
    """``auto`` (Fashion-MNIST when installed, else digits), ``digits`` (embedded), ``fashion-mnist[:DIR]``,
    ``mnist:DIR``, ``cifar10:DIR`` or ``imagefolder:DIR``, resized to ``size``; ``limit`` keeps the first
    ``limit`` training images (cut before resizing, so a limited run never holds the whole resized set)."""
    if arg == "auto":
        arg = default_data()
    kind, _, where = arg.partition(":")
    if kind == "digits" and not where:
        return load_digits(size, limit)
    if kind in IDX_DIRS:
        return load_idx(kind, size, where or None, limit)
    if kind in ("cifar10", "imagefolder"):
        if not where:
            raise DataError(f"--data {kind}:DIR needs a directory")
        root = Path(where)
        if not root.is_dir():
            raise DataError(f"{kind}: no such directory: {root}")
        return load_cifar10(root, size, limit) if kind == "cifar10" else load_imagefolder(root, size, limit)
    raise DataError(f"unknown --data {arg!r}; use auto, digits, fashion-mnist[:DIR], mnist:DIR, cifar10:DIR or "
                    "imagefolder:DIR")
