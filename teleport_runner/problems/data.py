"""MNIST-format (IDX) files read straight into tensors; no torchvision needed (it does not import beside the CPU torch 2.13.0 build).

IDX: a big-endian header (two zero bytes, a type code 0x08 = uint8, the number of dimensions, then each
dimension as a uint32) followed by the raw bytes. Files may be plain or gzipped. Every check names the file
and what was expected, so a truncated download is reported as such and not as a shape error three calls later.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError

#: dataset -> (torchvision folder name, Debian folder, torchvision class name)
DATASETS = {
    "mnist": ("MNIST", None, "MNIST"),
    "fashion_mnist": ("FashionMNIST", Path("/usr/share/datasets/fashion-mnist"), "FashionMNIST"),
}
SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
UINT8 = 0x08


def read_idx(path: str | Path) -> Tensor:
    """The uint8 tensor stored in an IDX file (plain or .gz), after validating header and length."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; flipped bytes: zlib.error
        reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc) or type(exc).__name__
        raise DataError(f"Could not read IDX file {path}: {reason} (corrupted or truncated). Re-download it.") from None
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(raw)} bytes, expected at least a 4-byte header.")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != UINT8 or not 1 <= ndim <= 4:
        raise DataError(f"IDX file {path} has a bad magic number {raw[:4].hex()}: expected 0000 08 0N "
                        "(uint8 data with N = 1..4 dimensions). The file is corrupted or not an IDX file.")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated inside its header ({len(raw)} of {header} bytes).")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"IDX file {path} has {len(raw)} bytes but its header (shape {list(dims)}) needs "
                        f"{expected}: the file is {'truncated' if len(raw) < expected else 'corrupted'}. "
                        "Re-download it.")
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy())


def write_idx(path: str | Path, data: Tensor | np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    path = Path(path)
    arr = np.ascontiguousarray(np.asarray(data, dtype=np.uint8))
    payload = struct.pack(">HBB", 0, UINT8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def write_synthetic(root: str | Path, dataset: str = "fashion_mnist", n_train: int = 600, n_test: int = 100,
                    seed: int = 0, gz: bool = False, n_classes: int = 10) -> Path:
    """Small learnable IDX files in torchvision's layout under ``root`` (for tests and users without data):
    each class is a fixed random 28x28 template plus noise. Returns the raw/ folder."""
    folder = Path(root) / DATASETS[dataset][0] / "raw"
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(n_classes, 28, 28))
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, n_classes, size=n)
        images = np.clip(templates[labels] * 0.6 + rng.integers(0, 102, size=(n, 28, 28)), 0, 255)
        suffix = ".gz" if gz else ""
        write_idx(folder / (SPLITS[split][0] + suffix), images.astype(np.uint8))
        write_idx(folder / (SPLITS[split][1] + suffix), labels.astype(np.uint8))
    return folder


def candidate_folders(dataset: str, root: str | Path) -> list[Path]:
    """Where the raw files may be, in order: torchvision's layout under root, root itself, Debian's package."""
    name, debian, _ = DATASETS[dataset]
    root = Path(root).expanduser()
    folders = [root / name / "raw", root / name, root]
    return folders + ([debian] if debian is not None else [])


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def locate(dataset: str, root: str | Path, download: bool = False) -> Path:
    """The folder holding all four IDX files of ``dataset``; downloads with torchvision if asked and possible."""
    if dataset not in DATASETS:
        raise DataError(f"Unknown dataset {dataset!r}. Valid values: {', '.join(DATASETS)}.")
    folders = candidate_folders(dataset, root)
    stems = [s for pair in SPLITS.values() for s in pair]
    for folder in folders:
        if all(_find(folder, s) for s in stems):
            return folder
    if download:
        _download(dataset, Path(root).expanduser())
        folder = folders[0]
        if all(_find(folder, s) for s in stems):
            return folder
    name = DATASETS[dataset][0]
    raise DataError(
        f"{dataset} data not found: looked for {', '.join(stems)} (plain or .gz) in "
        f"{', '.join(str(f) for f in folders)}. Put the four IDX files in {Path(root) / name / 'raw'} "
        f"(torchvision's layout), point data.root (or TELEPORT_DATA_ROOT) at a folder that holds them, "
        + ("install Debian's dataset-fashion-mnist, " if dataset == "fashion_mnist" else "")
        + "or set data.download=true where torchvision can download. For a quick run without data, "
        f"teleport_runner.problems.data.write_synthetic('{root}', '{dataset}') writes small synthetic files.")


def _download(dataset: str, root: Path) -> None:
    """torchvision's downloader, when it imports (with the CPU torch here it raises RuntimeError on import)."""
    try:
        import torchvision.datasets as tvd  # noqa: PLC0415 (optional dependency, imported only when asked)

        cls = getattr(tvd, DATASETS[dataset][2])
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as exc:  # import errors, network errors: report, then fall through to the not-found error
        import warnings

        warnings.warn(f"data.download=true but torchvision could not download {dataset}: "
                      f"{type(exc).__name__}: {exc}", stacklevel=2)


def load_split(folder: Path, split: str, n_classes: int = 10) -> tuple[Tensor, Tensor]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of ``split`` in ``folder``, cross-checked."""
    img_path, lab_path = (_find(folder, s) for s in SPLITS[split])
    if img_path is None or lab_path is None:
        raise DataError(f"Missing {split} files {SPLITS[split]} in {folder}.")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3:
        raise DataError(f"IDX file {img_path} has shape {list(images.shape)}; expected images (N, rows, cols).")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"IDX file {lab_path} has shape {list(labels.shape)}; expected ({images.shape[0]},), one "
                        f"label per image in {img_path}.")
    if labels.numel() and int(labels.max()) >= n_classes:
        raise DataError(f"IDX file {lab_path} holds label {int(labels.max())}; expected labels 0..{n_classes - 1}. "
                        "The file is corrupted or belongs to another dataset.")
    return images, labels.long()


def default_root() -> str:
    return os.environ.get("TELEPORT_DATA_ROOT", "data")
