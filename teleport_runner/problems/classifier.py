"""MLP classifiers on MNIST and Fashion-MNIST, with the whole dataset kept on the device (no DataLoader).

A seeded permutation of the 60k training images gives the train split (first ``n_train``) and the validation
split (last ``n_val``; 48k/12k by default, as the paper's figure 4), so the validation set does not change when
a fast run takes a smaller ``n_train``. The test set is only used by ``test`` at the end of a run.
Mini-batches are slices of a per-epoch permutation drawn from a generator seeded by (seed, epoch): the batch of
any step is a pure function of (seed, step), so two runs with the same seed, or a resumed run, see the same data.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from . import data as idx
from .base import Batch
from .mlp import NetworkProblem

EVAL_CHUNK = 8192  # samples per forward pass in evaluation: bounded memory, few kernel launches


class ImageClassifier(NetworkProblem):
    """Cross-entropy MLP classifier on 28x28 images scaled to [0, 1] and flattened to 784 inputs.

    Args:
        hidden: hidden widths (paper: [512, 512]); activation, slope, bias as in ``NetworkProblem``.
        batch_size: training mini-batch size (paper: 20).
        n_train, n_val: sizes of the train and validation splits of the training set (null: 48k / 12k, or
            the whole file split 4:1 when it is smaller).
        data: {root, download}: where the IDX files are (see ``data.locate``).
    """

    dataset = "mnist"

    def __init__(self, hidden: Sequence[int] = (512, 512), activation: str = "leaky_relu", slope: float = 0.01,
                 bias: bool = True, batch_size: int = 20, n_train: int | None = None, n_val: int | None = None,
                 data: dict | None = None):
        self._init_network([784, *hidden, 10], activation, slope, bias)
        if int(batch_size) < 1:
            raise ConfigError(f"Invalid problem.batch_size: {batch_size!r}; it must be a positive integer.")
        for key, value in (("n_train", n_train), ("n_val", n_val)):
            if value is not None and int(value) < 1:
                raise ConfigError(f"Invalid problem.{key}: {value!r}; use a positive integer or null.")
        data = dict(data or {})
        unknown = set(data) - {"root", "download"}
        if unknown:
            raise ConfigError(f"Unknown problem.data setting(s) {sorted(unknown)}. Valid settings: root, download.")
        self.batch_size = int(batch_size)
        self.n_train_req, self.n_val_req = n_train, n_val
        self.root = data.get("root") or idx.default_root()
        if not isinstance(data.get("download", False), bool) or not isinstance(self.root, str):
            raise ConfigError(f"Invalid problem.data: {data!r}; root must be a folder path (a string) and download "
                              "true or false.")
        self.download = data.get("download", False)
        self.name = self.dataset
        self._perm_epoch, self._perm = None, None

    # --- data -------------------------------------------------------------------------------------------
    def setup(self, device, dtype, seed) -> None:
        super().setup(device, dtype, seed)
        folder = idx.locate(self.dataset, self.root, self.download)
        images, labels = idx.load_split(folder, "train")
        n = images.shape[0]
        n_val = int(self.n_val_req) if self.n_val_req is not None else min(12000, n // 5)
        n_train = int(self.n_train_req) if self.n_train_req is not None else min(48000, n - n_val)
        if n_train + n_val > n:
            raise ConfigError(f"Invalid problem.n_train={n_train} with n_val={n_val}: together they exceed the "
                              f"{n} training images in {folder}.")
        if n_train < self.batch_size:
            raise ConfigError(f"Invalid problem.n_train={n_train}: smaller than batch_size={self.batch_size}.")
        split = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)), device="cpu")
        self.x_train, self.y_train = self._to_device(images[split[:n_train]], labels[split[:n_train]])
        self.x_val, self.y_val = self._to_device(images[split[n - n_val:]], labels[split[n - n_val:]])
        self.x_test, self.y_test = self._to_device(*idx.load_split(folder, "test"))
        self.n_train, self.n_val = n_train, n_val
        self.data_folder = folder

    def _to_device(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        x = images.reshape(images.shape[0], -1).to(device=self.device, dtype=self.dtype) / 255.0
        return x, labels.to(self.device)

    @property
    def steps_per_epoch(self) -> int:
        return self.n_train // self.batch_size  # the last partial batch is dropped, as DataLoader(drop_last)

    def epoch_permutation(self, epoch: int) -> Tensor:
        """The sample order of ``epoch``: drawn on the CPU (same order on every device) from a generator seeded
        by (seed, epoch), cached for the current epoch."""
        if self._perm_epoch != epoch:
            gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(epoch) + 1)
            self._perm = torch.randperm(self.n_train, generator=gen, device="cpu").to(self.device)
            self._perm_epoch = epoch
        return self._perm

    def _slice(self, epoch: int, start: int, size: int) -> Batch:
        perm = self.epoch_permutation(epoch)
        index = perm[torch.arange(start, start + size, device=self.device) % self.n_train]
        return self.x_train[index], self.y_train[index]

    def train_batch(self, step: int) -> Batch:
        epoch, i = divmod(step, self.steps_per_epoch)
        perm = self.epoch_permutation(epoch)
        index = perm[i * self.batch_size:(i + 1) * self.batch_size]
        # index_select: a third cheaper per step than advanced indexing (x[index]) for small batches on the CPU
        return self.x_train.index_select(0, index), self.y_train.index_select(0, index)

    def teleport_batch_size(self, requested: int | None) -> int:
        size = self.batch_size if requested is None else int(requested)
        if size > self.n_train:  # the batch would repeat samples: refused, never silently wrapped
            raise ConfigError(f"Invalid teleport.batch_size: {requested!r}; it must be at most the "
                              f"{self.n_train} training samples (problem.n_train), or null for the training "
                              f"batch size ({self.batch_size}).")
        return size

    def teleport_batches(self, step: int, n: int, batch_size: int | None) -> list[Batch]:
        """``n`` consecutive batches of the current epoch's order, starting at this step's batch (Algorithm 2:
        one teleport on each of B mini-batches of the epoch)."""
        size = self.teleport_batch_size(batch_size)
        epoch, i = divmod(step, self.steps_per_epoch)
        return [self._slice(epoch, i * self.batch_size + k * size, size) for k in range(n)]

    def holdout_batch(self, step: int) -> Batch:
        """Validation samples (never used by a teleport), a different slice at each step."""
        size = min(self.n_val, max(self.batch_size, 256))
        start = (step * size) % self.n_val
        index = torch.arange(start, start + size, device=self.device) % self.n_val
        return self.x_val[index], self.y_val[index]

    # --- loss and metrics -------------------------------------------------------------------------------
    def init_params(self) -> list[Tensor]:
        return self.uniform_init(torch.Generator().manual_seed(int(self.seed)))

    def output_loss(self, out: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(out, batch[1])

    @torch.no_grad()
    def _metrics(self, params, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        total, correct = torch.zeros((), device=self.device, dtype=torch.float64), torch.zeros((), device=self.device)
        for s in range(0, x.shape[0], EVAL_CHUNK):
            logits = self.forward(params, x[s:s + EVAL_CHUNK])
            total += F.cross_entropy(logits, y[s:s + EVAL_CHUNK], reduction="sum").double()
            correct += (logits.argmax(1) == y[s:s + EVAL_CHUNK]).sum()
        return total / x.shape[0], correct / x.shape[0]

    def evaluate(self, params) -> dict[str, float]:
        loss, acc = self._metrics(params, self.x_val, self.y_val)
        return {"val_loss": float(loss), "val_acc": float(acc)}

    def test(self, params) -> dict[str, float]:
        loss, acc = self._metrics(params, self.x_test, self.y_test)
        return {"test_loss": float(loss), "test_acc": float(acc)}

    def final_loss(self, params) -> Tensor:
        return self._metrics(params, self.x_train, self.y_train)[0]


class MNIST(ImageClassifier):
    dataset = "mnist"


class FashionMNIST(ImageClassifier):
    dataset = "fashion_mnist"
