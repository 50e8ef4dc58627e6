"""The paper's multi-layer regression network (arXiv 2205.10637, figure 3).

Paper layout X (5 x 4: features x samples), Y (8 x 4), W1 6x5, W2 7x6, W3 8x7, everything U[0, 1), no bias,
LeakyReLU 0.1, loss 0.5 ||Y - W3 s(W2 s(W1 X))||^2. Here samples are rows: x is (4, 5), y is (4, 8).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..errors import ConfigError, one_of
from .base import Batch
from .mlp import NetworkProblem

INITS = ("uniform01", "official", "default")


class MLPRegression(NetworkProblem):
    """Full-batch regression of random targets; data and weights come from the seed.

    Args:
        dims: [inputs, hidden..., outputs] (paper: [5, 6, 7, 8]).
        n_samples: rows of X and Y (paper: 4).
        activation, slope: hidden activation (paper: leaky_relu, 0.1).
        bias: add biases (paper: none).
        init: ``uniform01`` (the paper: every entry U[0, 1)), ``official`` (the same distribution drawn as the
            official 2022 script draws it: float32 from ``torch.manual_seed(seed)``, weights W1, W2, ... first, then X
            and Y in its features x samples layout; its 5 runs use seeds n*n*12345, n = 0..4) or ``default``
            (nn.Linear's).
    """

    name = "mlp_regression"

    def __init__(self, dims: Sequence[int] = (5, 6, 7, 8), n_samples: int = 4, activation: str = "leaky_relu",
                 slope: float = 0.1, bias: bool = False, init: str = "uniform01"):
        if int(n_samples) < 1:
            raise ConfigError(f"Invalid problem.n_samples: {n_samples!r}; it must be a positive integer.")
        if init not in INITS:
            raise one_of("problem.init", init, INITS)
        if init == "official" and bias:
            raise ConfigError("problem.init=official draws the official script's bias-free network; use "
                              "problem.bias=false or problem.init=uniform01.")
        self._init_network(dims, activation, slope, bias)
        self.n_samples, self.init = int(n_samples), init

    def setup(self, device, dtype, seed) -> None:
        super().setup(device, dtype, seed)
        # One CPU stream (float64: data first, then weights; official: its order in float32), so a seed means the
        # same problem everywhere.
        gen = torch.Generator().manual_seed(int(seed))
        if self.init == "official":
            self._official_draws(gen)
        else:
            self._uniform_draws(gen)
        cast = lambda t: t.to(device=self.device, dtype=dtype)  # noqa: E731
        self.x, self.y = cast(self.x64), cast(self.y64)
        self._holdout = tuple(cast(t) for t in self.holdout64)

    def _uniform_draws(self, gen: torch.Generator) -> None:
        draw = lambda *shape: torch.rand(*shape, generator=gen, dtype=torch.float64, device="cpu")  # noqa: E731
        self.x64, self.y64 = draw(self.n_samples, self.sizes[0]), draw(self.n_samples, self.sizes[-1])
        if self.init == "uniform01":
            self._init64 = []
            for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
                self._init64.append(draw(fan_out, fan_in))
                if self.bias:
                    self._init64.append(draw(fan_out))
        else:
            self._init64 = [p.detach().double() for p in self.uniform_init(gen)]
        # A second batch of the same distribution: how far a data-dependent teleport moved f off its batch.
        self.holdout64 = (draw(self.n_samples, self.sizes[0]), draw(self.n_samples, self.sizes[-1]))

    def _official_draws(self, gen: torch.Generator) -> None:
        """The official script's stream (float32 torch.rand, the global generator's algorithm): W_i (out, in) for
        every layer, then X (features, samples) and Y (outputs, samples), transposed here; a holdout batch after."""
        def draw(*shape):
            return torch.rand(*shape, generator=gen, dtype=torch.float32, device="cpu").double()

        self._init64 = [draw(fan_out, fan_in) for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:])]
        self.x64, self.y64 = draw(self.sizes[0], self.n_samples).T, draw(self.sizes[-1], self.n_samples).T
        self.holdout64 = (draw(self.sizes[0], self.n_samples).T, draw(self.sizes[-1], self.n_samples).T)

    def init_params(self) -> list[Tensor]:
        return [p.to(device=self.device, dtype=self.dtype).clone().requires_grad_(True) for p in self._init64]

    def output_loss(self, out: Tensor, batch: Batch) -> Tensor:
        return 0.5 * (batch[1] - out).square().sum()

    def train_batch(self, step: int) -> Batch:
        return (self.x, self.y)

    def holdout_batch(self, step: int) -> Batch:
        return self._holdout

    def teleport_batch_size(self, requested: int | None) -> int:
        return self.n_samples  # full batch: teleports always see all samples
