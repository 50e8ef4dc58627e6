"""MLP classifiers on MNIST and Fashion-MNIST, with the whole dataset kept on the device (no DataLoader).

The split, the batches (a pure function of (seed, step)) and the metrics are ``resident.ResidentData``'s, shared
with ``problem=module``; this file adds the MLP and the IDX files.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import data as idx
from .base import Batch
from .mlp import NetworkProblem
from .resident import EVAL_CHUNK, ResidentData  # noqa: F401 (EVAL_CHUNK: kept importable from here)


class ImageClassifier(ResidentData, NetworkProblem):
    """Cross-entropy MLP classifier on 28x28 images scaled to [0, 1] and flattened to 784 inputs.

    Args:
        hidden: hidden widths (paper: [512, 512]); activation, slope, bias as in ``NetworkProblem``.
        batch_size: training mini-batch size (paper: 20).
        n_train, n_val: sizes of the train and validation splits of the training set (null: 48k / 12k, or
            the whole file split 4:1 when it is smaller).
        data: {root, download}: where the IDX files are (see ``data.locate``).
    """

    dataset = "mnist"
    samples = "training images"

    def __init__(self, hidden: Sequence[int] = (512, 512), activation: str = "leaky_relu", slope: float = 0.01,
                 bias: bool = True, batch_size: int = 20, n_train: int | None = None, n_val: int | None = None,
                 data: dict | None = None):
        self._init_network([784, *hidden, 10], activation, slope, bias)
        self._init_data(batch_size, n_train, n_val, data, idx.default_root())
        self.name = self.dataset

    def load_splits(self):
        folder = idx.locate(self.dataset, self.root, self.download)
        return (*idx.load_split(folder, "train"), *idx.load_split(folder, "test"), folder)

    def inputs(self, raw: Tensor) -> Tensor:
        return raw.reshape(raw.shape[0], -1).to(device=self.device, dtype=self.dtype) / 255.0

    def init_params(self) -> list[Tensor]:
        return self.uniform_init(torch.Generator().manual_seed(int(self.seed)))

    def output_loss(self, out: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(out, batch[1])

    def output_loss_sum(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out, y, reduction="sum")


class MNIST(ImageClassifier):
    dataset = "mnist"


class FashionMNIST(ImageClassifier):
    dataset = "fashion_mnist"
