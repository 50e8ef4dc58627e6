"""Any ``torch.nn.Module`` as a problem (``problem=module``): the user's network on a dataset kept on the device.

The loss stays a pure function of the parameters through ``torch.func.functional_call``: the module's own
parameters are only the template of the initial point (built by Hydra right after ``torch.manual_seed(seed)``, so
a seed gives the same network with and without teleports). The module runs in eval mode: dropout is off and
BatchNorm uses (and never updates) its running statistics, so the same parameters always give the same loss.
Batching, validation and test metrics are ``resident.ResidentData``'s, shared with the MLP classifiers.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..errors import ConfigError, first_line, one_of
from . import cifar, data as idx
from .base import Batch, Problem
from .resident import ResidentData

DATASETS = ("mnist", "fashion_mnist", "cifar10", "tensors")
LOSSES = ("cross_entropy", "mse")


class FunctionalModule:
    """A module called with a given list of parameter tensors (in ``named_parameters`` order)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.names = [name for name, _ in model.named_parameters()]

    def forward(self, params: Sequence[Tensor], x: Tensor) -> Tensor:
        return functional_call(self.model, dict(zip(self.names, params)), (x,))


def output_loss(kind: str, out: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """cross_entropy on class labels; mse against targets of the output's shape (class labels become one-hot)."""
    if kind == "cross_entropy":
        return F.cross_entropy(out, y, reduction=reduction)
    target = F.one_hot(y, out.shape[1]).to(out.dtype) if not y.is_floating_point() else y
    loss = F.mse_loss(out, target, reduction=reduction)
    return loss / out[0].numel() if reduction == "sum" else loss  # "sum": of the per-sample means


class ModuleProblem(ResidentData, FunctionalModule, Problem):
    """A user's ``nn.Module`` trained on a built-in dataset or a tensor file.

    Args:
        model: the module (``_target_`` of a class or factory in the user's package, with its arguments).
        dataset: mnist, fashion_mnist (inputs (N, 1, 28, 28) in [0, 1]), cifar10 ((N, 3, 32, 32) in [0, 1]) or
            tensors (``data.path``: a file written by ``torch.save((x, y), path)``; no test split).
        loss: cross_entropy (class labels) or mse (targets of the output's shape, or labels made one-hot).
        batch_size, n_train, n_val: as the MLP classifiers.
        data: {root, download, path}: root holds the IDX files or ``cifar-10-batches-py/``; path for tensors.
    """

    is_module = True
    data_keys = ("root", "download", "path")

    def __init__(self, model: nn.Module, dataset: str = "mnist", loss: str = "cross_entropy", batch_size: int = 20,
                 n_train: int | None = None, n_val: int | None = None, data: dict | None = None):
        if not isinstance(model, nn.Module):
            raise ConfigError(f"Invalid problem.model: it built {type(model).__name__} ({model!r:.80}), not a "
                              "torch.nn.Module. Give problem.model._target_ a module class or a function returning "
                              "one, e.g. problem.model._target_=mymodels.SmallCNN.")
        if dataset not in DATASETS:
            raise one_of("problem.dataset", dataset, DATASETS)
        if loss not in LOSSES:
            raise one_of("problem.loss", loss, LOSSES)
        FunctionalModule.__init__(self, model)
        if not self.names:
            raise ConfigError(f"Invalid problem.model: {type(model).__name__} has no parameters to train.")
        data = self._init_data(batch_size, n_train, n_val, data, idx.default_root())
        if dataset == "tensors" and not isinstance(data.get("path"), str):
            raise ConfigError(f"problem.dataset=tensors needs problem.data.path: a file written by "
                              f"torch.save((x, y), path); got {data.get('path')!r}.")
        self.dataset, self.loss_kind, self.path = dataset, loss, data.get("path")
        self.name = f"module:{type(model).__name__}"
        self.samples = "training images" if dataset != "tensors" else "samples"

    @property
    def accuracy(self) -> bool:
        return self.loss_kind == "cross_entropy" or not self.y_val.is_floating_point()

    def load_splits(self):
        if self.dataset == "cifar10":
            return cifar.load(self.root)
        if self.dataset == "tensors":
            return cifar.load_tensors(self.path)
        folder = idx.locate(self.dataset, self.root, self.download)
        return (*idx.load_split(folder, "train"), *idx.load_split(folder, "test"), folder)

    def inputs(self, raw: Tensor) -> Tensor:
        if self.dataset == "tensors":
            return raw.to(device=self.device, dtype=self.dtype if raw.is_floating_point() else raw.dtype)
        images = raw.unsqueeze(1) if raw.ndim == 3 else raw  # (N, 28, 28) -> (N, 1, 28, 28)
        return images.to(device=self.device, dtype=self.dtype) / 255.0

    def setup(self, device, dtype, seed) -> None:
        self.model.to(device=device, dtype=dtype).eval()
        super().setup(device, dtype, seed)
        x, y = self.train_batch(0)
        try:
            with torch.no_grad():
                self.output_loss(self.forward(self.init_params(), x), (x, y))
        except Exception as exc:
            raise ConfigError(
                f"problem.model ({type(self.model).__name__}) does not fit problem.dataset={self.dataset} with "
                f"loss {self.loss_kind}: a batch of inputs {tuple(x.shape)} and targets {tuple(y.shape)} failed "
                f"with {type(exc).__name__}: {first_line(exc)}. Check the model's "
                "input and output sizes.") from None

    def example_input(self) -> Tensor:
        """A few training inputs: what symmetry discovery traces shapes with."""
        return self.x_train[:2]

    def init_params(self) -> list[Tensor]:
        return [p.detach().clone().requires_grad_(True) for p in self.model.parameters()]

    def output_loss(self, out: Tensor, batch: Batch) -> Tensor:
        return output_loss(self.loss_kind, out, batch[1])

    def output_loss_sum(self, out: Tensor, y: Tensor) -> Tensor:
        return output_loss(self.loss_kind, out, y, "sum")

    def loss(self, params: list[Tensor], batch: Batch) -> Tensor:
        return self.output_loss(self.forward(params, batch[0]), batch)
