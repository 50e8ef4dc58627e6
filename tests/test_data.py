"""IDX reading, locating data folders, and the classifier's data handling (synthetic files; real ones if present)."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from teleport_runner.errors import DataError
from teleport_runner.problems import data as idx
from teleport_runner.problems.classifier import FashionMNIST, MNIST

REPO = Path(__file__).resolve().parents[1]


def real_root() -> Path | None:
    """$TELEPORT_DATA_ROOT (relative to the repository) or ../shared/data, when it holds the IDX files."""
    for root in (os.environ.get("TELEPORT_DATA_ROOT"), str(REPO.parent / "shared" / "data")):
        if root:
            path = (REPO / root).resolve() if not Path(root).is_absolute() else Path(root)
            if (path / "MNIST" / "raw").is_dir() and (path / "FashionMNIST" / "raw").is_dir():
                return path
    return None


def test_idx_round_trip_plain_and_gz(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        idx.write_idx(tmp_path / name, data)
        assert torch.equal(idx.read_idx(tmp_path / name), torch.from_numpy(data))
    assert gzip.decompress((tmp_path / "a-idx3-ubyte.gz").read_bytes())[:4] == b"\x00\x00\x08\x03"


def test_truncated_and_corrupted_files_name_the_file(tmp_path):
    path = idx.write_idx(tmp_path / "t-idx3-ubyte", np.zeros((5, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"t-idx3-ubyte has 3836 bytes.*truncated"):
        idx.read_idx(path)
    path.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 20)
    with pytest.raises(DataError, match=r"t-idx3-ubyte has a bad magic number"):
        idx.read_idx(path)
    gz = tmp_path / "b-idx1-ubyte.gz"
    gz.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="b-idx1-ubyte.gz"):
        idx.read_idx(gz)


def test_labels_out_of_range_and_mismatched_counts(tmp_path):
    folder = idx.write_synthetic(tmp_path, "mnist", n_train=50, n_test=10)
    idx.write_idx(folder / "train-labels-idx1-ubyte", np.full(50, 12, np.uint8))
    with pytest.raises(DataError, match=r"holds label 12; expected labels 0..9"):
        idx.load_split(folder, "train")
    idx.write_idx(folder / "train-labels-idx1-ubyte", np.zeros(49, np.uint8))
    with pytest.raises(DataError, match="one label per image"):
        idx.load_split(folder, "train")


def test_empty_root_fails_fast_naming_every_folder(tmp_path):
    with pytest.raises(DataError) as info:
        idx.locate("mnist", tmp_path)
    message = str(info.value)
    for folder in idx.candidate_folders("mnist", tmp_path):
        assert str(folder) in message
    assert "data.download" in message and "write_synthetic" in message


def test_download_without_torchvision_falls_back_to_the_error(tmp_path):
    # with this CPU torch `import torchvision` raises; the request must end in the not-found DataError
    with pytest.warns(UserWarning, match="could not download"), pytest.raises(DataError, match="not found"):
        idx.locate("fashion_mnist", tmp_path / "none", download=True)


def _classifier(root, cls=FashionMNIST, **kw):
    problem = cls(hidden=[8], batch_size=10, data={"root": str(root)}, **kw)
    problem.setup("cpu", torch.float32, 3)
    return problem


@pytest.mark.parametrize("gz", [False, True])
def test_classifier_split_batches_and_determinism(tmp_path, gz):
    idx.write_synthetic(tmp_path, "fashion_mnist", n_train=200, n_test=30, gz=gz)
    problem = _classifier(tmp_path, n_val=40)
    assert (problem.n_train, problem.n_val, problem.steps_per_epoch) == (160, 40, 16)
    assert problem.x_train.min() >= 0 and problem.x_train.max() <= 1 and problem.x_train.shape[1] == 784
    # a batch is a pure function of (seed, step): a fresh problem, or steps in another order, agree
    other = _classifier(tmp_path, n_val=40)
    for step in (17, 3, 40, 3):
        x, y = problem.train_batch(step)
        x2, y2 = other.train_batch(step)
        assert torch.equal(x, x2) and torch.equal(y, y2) and x.shape == (10, 784)
    # one epoch visits every training sample once; the next epoch reorders them
    epoch0 = torch.cat([problem.train_batch(s)[0] for s in range(16)])
    assert torch.equal(epoch0.sum(0), problem.x_train.sum(0)) or torch.allclose(epoch0.sum(0), problem.x_train.sum(0))
    assert not torch.equal(problem.train_batch(0)[0], problem.train_batch(16)[0])
    batches = problem.teleport_batches(5, 3, 7)
    assert [b[0].shape[0] for b in batches] == [7, 7, 7]
    assert problem.holdout_batch(5)[0].shape[0] == 40
    params = problem.init_params()
    assert set(problem.evaluate(params)) == {"val_loss", "val_acc"}
    assert set(problem.test(params)) == {"test_loss", "test_acc"}
    assert torch.isfinite(problem.final_loss(params))


def test_classifier_rejects_split_larger_than_data(tmp_path):
    from teleport_runner.errors import ConfigError

    idx.write_synthetic(tmp_path, "mnist", n_train=100, n_test=10)
    with pytest.raises(ConfigError, match="exceed the 100 training images"):
        _classifier(tmp_path, MNIST, n_train=90, n_val=20)


@pytest.mark.skipif(real_root() is None, reason="real MNIST/Fashion-MNIST files not present")
@pytest.mark.parametrize("cls", [MNIST, FashionMNIST])
def test_real_files_load_with_the_paper_split(cls):
    problem = cls(hidden=[8], data={"root": str(real_root())})
    problem.setup("cpu", torch.float32, 0)
    assert (problem.n_train, problem.n_val, problem.x_test.shape[0]) == (48000, 12000, 10000)
    assert problem.steps_per_epoch == 2400
    assert sorted(problem.y_train.unique().tolist()) == list(range(10))
