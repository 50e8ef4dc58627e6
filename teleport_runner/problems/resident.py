"""A labelled dataset kept whole on the device (no DataLoader): the split, the batches and the metrics that the MLP
classifiers and ``problem=module`` share.

A seeded permutation of the training set gives the train split (first ``n_train``) and the validation split (last
``n_val``; 48k/12k on MNIST, as the paper's figure 4), so the validation set does not change when a fast run takes a
smaller ``n_train``. The test set is only used by ``test`` at the end of a run. Mini-batches are slices of a
per-epoch permutation drawn from a generator seeded by (seed, epoch): the batch of any step is a pure function of
(seed, step), so two runs with the same seed, or a resumed run, see the same data.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from .base import Batch

EVAL_CHUNK = 8192  # samples per forward pass in evaluation: bounded memory, few kernel launches


class ResidentData:
    """Mixin for problems whose data lives on the device. Subclasses implement ``load_splits`` (the raw arrays),
    ``inputs`` (raw -> model inputs on the device), ``forward(params, x)``, ``output_loss(out, batch)`` and
    ``output_loss_sum(out, y)`` (summed over the samples, for the metrics); ``accuracy`` says whether the targets
    are class labels."""

    accuracy = True
    samples = "training samples"  # how errors name them ("training images" for image datasets)
    data_keys = ("root", "download")

    def _init_data(self, batch_size: int, n_train: int | None, n_val: int | None, data: dict | None,
                   default_root: str) -> dict:
        """Validate and keep the batching settings; returns the ``data`` settings (root checked, others as given)."""
        if int(batch_size) < 1:
            raise ConfigError(f"Invalid problem.batch_size: {batch_size!r}; it must be a positive integer.")
        for key, value in (("n_train", n_train), ("n_val", n_val)):
            if value is not None and int(value) < 1:
                raise ConfigError(f"Invalid problem.{key}: {value!r}; use a positive integer or null.")
        data = dict(data or {})
        unknown = set(data) - set(self.data_keys)
        if unknown:
            raise ConfigError(f"Unknown problem.data setting(s) {sorted(unknown)}. Valid settings: "
                              f"{', '.join(self.data_keys)}.")
        self.batch_size = int(batch_size)
        self.n_train_req, self.n_val_req = n_train, n_val
        self.root = data.get("root") or default_root
        if not isinstance(data.get("download", False), bool) or not isinstance(self.root, str):
            raise ConfigError(f"Invalid problem.data: {data!r}; root must be a folder path (a string) and download "
                              "true or false.")
        self.download = data.get("download", False)
        self._perm_epoch, self._perm = None, None
        return data

    def load_splits(self) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, object]:
        """(train inputs, train targets, test inputs or None, test targets or None, where they came from)."""
        raise NotImplementedError

    def inputs(self, raw: Tensor) -> Tensor:
        """Raw samples (e.g. uint8 images) -> the model's inputs on ``self.device`` in ``self.dtype``."""
        raise NotImplementedError

    # --- data -------------------------------------------------------------------------------------------
    def setup(self, device, dtype, seed) -> None:
        super().setup(device, dtype, seed)
        x, y, x_test, y_test, folder = self.load_splits()
        n = x.shape[0]
        n_val = int(self.n_val_req) if self.n_val_req is not None else min(12000, n // 5)
        n_train = int(self.n_train_req) if self.n_train_req is not None else min(48000, n - n_val)
        if n_train + n_val > n:
            raise ConfigError(f"Invalid problem.n_train={n_train} with n_val={n_val}: together they exceed the "
                              f"{n} {self.samples} in {folder}.")
        if n_train < self.batch_size:
            raise ConfigError(f"Invalid problem.n_train={n_train}: smaller than batch_size={self.batch_size}.")
        split = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)), device="cpu")
        self.x_train, self.y_train = self._to_device(x[split[:n_train]], y[split[:n_train]])
        self.x_val, self.y_val = self._to_device(x[split[n - n_val:]], y[split[n - n_val:]])
        self.x_test, self.y_test = (None, None) if x_test is None else self._to_device(x_test, y_test)
        self.n_train, self.n_val = n_train, n_val
        self.data_folder = folder

    def _to_device(self, raw: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        targets = targets.to(self.device)
        return self.inputs(raw), targets if not targets.is_floating_point() else targets.to(self.dtype)

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

    # --- metrics ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _metrics(self, params, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        total, correct = torch.zeros((), device=self.device, dtype=torch.float64), torch.zeros((), device=self.device)
        for s in range(0, x.shape[0], EVAL_CHUNK):
            out = self.forward(params, x[s:s + EVAL_CHUNK])
            total += self.output_loss_sum(out, y[s:s + EVAL_CHUNK]).double()
            if self.accuracy:
                correct += (out.argmax(1) == y[s:s + EVAL_CHUNK]).sum()
        return total / x.shape[0], correct / x.shape[0]

    def _named_metrics(self, prefix: str, params, x: Tensor, y: Tensor) -> dict[str, float]:
        loss, acc = self._metrics(params, x, y)
        return {f"{prefix}_loss": float(loss), **({f"{prefix}_acc": float(acc)} if self.accuracy else {})}

    def evaluate(self, params) -> dict[str, float]:
        return self._named_metrics("val", params, self.x_val, self.y_val)

    def test(self, params) -> dict[str, float]:
        return {} if self.x_test is None else self._named_metrics("test", params, self.x_test, self.y_test)

    def final_loss(self, params) -> Tensor:
        return self._metrics(params, self.x_train, self.y_train)[0]
