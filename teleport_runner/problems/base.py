"""The problem contract: parameters, a pure loss function of them, and the batches to evaluate it on.

A problem owns its data (kept on the device as tensors) and its initial parameters. The training loop and
the teleport solvers only call this interface, so a new problem is one new class and one YAML file.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

Batch = Any  # None for data-free problems, else a tuple (x, y) of tensors on the device


class Problem(ABC):
    """Base class. Subclasses set ``name`` and implement ``init_params`` and ``loss``.

    ``setup(device, dtype, seed)`` is called once by the runner before anything else; it builds data and
    remembers the seed. Everything a problem creates lives on ``self.device`` in ``self.dtype``.
    """

    name: str = "problem"
    #: True for networks whose symmetries act on layer pairs; level-set symmetries need ``h``/``h_inv``.
    is_network: bool = False

    def setup(self, device: torch.device, dtype: torch.dtype, seed: int) -> None:
        self.device, self.dtype, self.seed = torch.device(device), dtype, seed

    @property
    def steps_per_epoch(self) -> int:
        """Descent steps in one pass over the training data (1 for full-batch problems)."""
        return 1

    @abstractmethod
    def init_params(self) -> list[Tensor]:
        """Fresh leaf tensors (requires_grad=True), deterministic given the seed passed to ``setup``."""

    @abstractmethod
    def loss(self, params: list[Tensor], batch: Batch) -> Tensor:
        """Scalar loss; a pure, differentiable function of ``params`` (teleport solvers differentiate it)."""

    def train_batch(self, step: int) -> Batch:
        """The batch for descent step ``step``: a pure function of (seed, step), so resuming is exact."""
        return None

    def teleport_batches(self, step: int, n: int, batch_size: int | None) -> list[Batch]:
        """Batches a teleport at ``step`` uses, one teleport each (the paper's Algorithm 2)."""
        return [self.train_batch(step)] * n

    def holdout_batch(self, step: int) -> Batch | None:
        """A batch different from the teleport batches, to measure how far a data-dependent teleport
        changed the function away from the data it was exact on. None when there is no such data."""
        return None

    def final_loss(self, params: list[Tensor]) -> Tensor:
        """The training loss at the final iterate (the full training set for mini-batch problems)."""
        return self.loss(params, self.train_batch(0))

    def evaluate(self, params: list[Tensor]) -> dict[str, float]:
        """Validation metrics (logged once per epoch); empty for problems without held-out data."""
        return {}

    def test(self, params: list[Tensor]) -> dict[str, float]:
        """Final test-set metrics; empty for problems without a test set."""
        return {}
