"""CIFAR-10 from its standard Python pickle batches (``cifar-10-batches-py/``), and ``(x, y)`` tensor files.

CIFAR-10's Python version is five training batches ``data_batch_1..5`` and ``test_batch``, each a pickled dict
with ``b"data"`` (10000, 3072) uint8 (rows: 1024 red, 1024 green, 1024 blue values of a 32x32 image) and
``b"labels"`` (10000 ints). Pickle runs code from the file it reads: only point ``data.root`` at files you trust.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError

FOLDER = "cifar-10-batches-py"
TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST = "test_batch"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def locate(root: str | Path) -> Path:
    """The folder holding the six CIFAR-10 batch files: ``root/cifar-10-batches-py`` or ``root`` itself."""
    root = Path(root).expanduser()
    folders = [root / FOLDER, root]
    for folder in folders:
        if all((folder / name).is_file() for name in (*TRAIN, TEST)):
            return folder
    raise DataError(
        f"cifar10 data not found: looked for {', '.join(TRAIN)} and {TEST} in {folders[0]} and {folders[1]}. "
        f"Download the Python version from {URL}, unpack it (tar xzf) into {root} so that {root / FOLDER} holds "
        "them, or point problem.data.root (or TELEPORT_DATA_ROOT) at the folder that does.")


def read_batch(path: Path) -> tuple[Tensor, Tensor]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) of one pickle batch, checked."""
    try:
        with open(path, "rb") as handle:
            entry = pickle.load(handle, encoding="bytes")
        data, labels = np.asarray(entry[b"data"], dtype=np.uint8), np.asarray(entry[b"labels"], dtype=np.int64)
    except Exception as exc:  # truncated pickle, wrong keys, not a pickle at all
        raise DataError(f"Could not read CIFAR-10 batch {path}: {type(exc).__name__}: {exc}. Expected a pickled "
                        f"dict with b'data' (N, 3072) uint8 and b'labels'; re-download from {URL}.") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise DataError(f"CIFAR-10 batch {path} holds data of shape {list(data.shape)} and {labels.size} labels; "
                        "expected (N, 3072) and N labels.")
    if labels.size and not 0 <= labels.min() <= labels.max() <= 9:
        raise DataError(f"CIFAR-10 batch {path} holds labels outside 0..9: the file is corrupted.")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def load(root: str | Path) -> tuple[Tensor, Tensor, Tensor, Tensor, Path]:
    folder = locate(root)
    train = [read_batch(folder / name) for name in TRAIN]
    x_test, y_test = read_batch(folder / TEST)
    return torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), x_test, y_test, folder


def write_synthetic(root: str | Path, n_per_batch: int = 100, n_test: int = 100, seed: int = 0) -> Path:
    """Small learnable files in the ``cifar-10-batches-py/`` format under ``root`` (for tests): each class a fixed
    random 3x32x32 template plus noise. Returns the folder."""
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(10, 3072))
    for name, n in [(b, n_per_batch) for b in TRAIN] + [(TEST, n_test)]:
        labels = rng.integers(0, 10, size=n)
        data = np.clip(templates[labels] * 0.6 + rng.integers(0, 102, size=(n, 3072)), 0, 255).astype(np.uint8)
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": data, b"labels": labels.tolist()}, handle)
    return folder


def load_tensors(path: str | Path) -> tuple[Tensor, Tensor, None, None, Path]:
    """``(x, y)`` saved with ``torch.save((x, y), path)``: x (N, ...) inputs, y (N,) class labels or (N, ...)
    regression targets. Loaded with ``weights_only=True`` (plain tensors, no code)."""
    path = Path(path).expanduser()
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"Could not read problem.data.path={str(path)!r}: {type(exc).__name__}: {exc}. Expected a "
                        "file written by torch.save((x, y), path).") from None
    if (not isinstance(value, (tuple, list)) or len(value) != 2 or not all(torch.is_tensor(v) for v in value)
            or value[0].shape[:1] != value[1].shape[:1] or value[0].ndim < 2):
        raise DataError(f"problem.data.path={str(path)!r} does not hold a pair (x, y) of tensors with the same "
                        "number of rows (x at least 2-D: samples first). Write it with torch.save((x, y), path).")
    return value[0], value[1], None, None, path
