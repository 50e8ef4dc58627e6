"""A functional MLP and the network-problem contract that layer symmetries rely on.

Parameters are a flat list ``[W1, (b1), W2, (b2), ...]`` with ``W`` shaped (out, in) as in ``nn.Linear``, so the
same tensors can be copied into an ``nn.Sequential`` (tests check the runner against a plain PyTorch loop).
Every hidden layer applies the activation; the output layer is linear (logits or regression outputs).
Samples are rows (torch layout): a batch ``x`` is (batch, features); the paper's X (features x samples) is x^T.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, one_of
from .base import Problem

ACTIVATIONS = ("leaky_relu", "relu", "tanh", "identity")


def activation_fn(name: str, slope: float = 0.01):
    """sigma as a function of a tensor."""
    if name == "leaky_relu":
        return lambda z: F.leaky_relu(z, slope)
    if name == "relu":
        return F.relu
    if name == "tanh":
        return torch.tanh
    if name == "identity":
        return lambda z: z
    raise one_of("problem.activation", name, ACTIVATIONS)


def activation_vjp(name: str, slope: float = 0.01):
    """(u, z) -> u * sigma'(z): the backward of sigma at pre-activations z, by torch's own backward kernels (one
    op each, themselves differentiable in u). Used by exact closed-form gradients."""
    if name == "leaky_relu":
        return lambda u, z: torch.ops.aten.leaky_relu_backward(u, z, slope, False)
    if name == "relu":
        return lambda u, z: torch.ops.aten.threshold_backward(u, z, 0.0)
    if name == "tanh":
        return lambda u, z: torch.ops.aten.tanh_backward(u, torch.tanh(z))
    if name == "identity":
        return lambda u, z: u
    raise one_of("problem.activation", name, ACTIVATIONS)


def mlp_forward(params: Sequence[Tensor], x: Tensor, layers: Sequence[tuple[int, int | None]], act) -> Tensor:
    """f(x) = W_L act(... act(W_1 x + b_1) ...) + b_L, one ``F.linear`` per layer."""
    h = x
    for i, (wi, bi) in enumerate(layers):
        h = F.linear(h, params[wi], None if bi is None else params[bi])
        if i < len(layers) - 1:
            h = act(h)
    return h


class NetworkProblem(Problem):
    """Base class of MLP problems: the layer structure and activation that layer symmetries act on.

    Subclasses call ``_init_network(sizes, activation, slope, bias)`` in ``__init__`` and implement
    ``output_loss`` (the loss as a function of the network's outputs on a batch) and the data methods.
    ``sizes`` = [in, hidden..., out].
    """

    is_network = True

    def _init_network(self, sizes: Sequence[int], activation: str, slope: float, bias: bool) -> None:
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ConfigError(f"Invalid network sizes {sizes!r}: need [inputs, hidden..., outputs], all >= 1.")
        if activation not in ACTIVATIONS:
            raise one_of("problem.activation", activation, ACTIVATIONS)
        if activation == "leaky_relu" and not float(slope) > 0:
            raise ConfigError(f"Invalid problem.slope: {slope!r}; LeakyReLU needs a slope > 0 (slope 0 is relu).")
        self.sizes, self.activation, self.slope, self.bias = sizes, activation, float(slope), bool(bias)
        self.act = activation_fn(activation, self.slope)
        self.act_vjp = activation_vjp(activation, self.slope)
        # layers[i] = (index of W_i, index of b_i or None) in the flat parameter list
        self.layers: list[tuple[int, int | None]] = []
        k = 0
        for _ in range(len(sizes) - 1):
            self.layers.append((k, k + 1 if self.bias else None))
            k += 2 if self.bias else 1

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def forward(self, params: Sequence[Tensor], x: Tensor) -> Tensor:
        return mlp_forward(params, x, self.layers, self.act)

    def output_loss(self, out: Tensor, batch) -> Tensor:
        """The scalar loss of outputs ``out`` (batch, out) against the batch's targets."""
        raise NotImplementedError

    def loss(self, params: list[Tensor], batch) -> Tensor:
        return self.output_loss(self.forward(params, batch[0]), batch)

    def trace(self, params: Sequence[Tensor], x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Each layer's input h_i (batch, in_i) and pre-activation z_i = h_i W_i^T + b_i (batch, out_i)."""
        inputs, preacts, h = [], [], x
        for i, (wi, bi) in enumerate(self.layers):
            inputs.append(h)
            z = F.linear(h, params[wi], None if bi is None else params[bi])
            preacts.append(z)
            h = self.act(z) if i < self.n_layers - 1 else z
        return inputs, preacts

    def hidden(self, params: Sequence[Tensor], x: Tensor) -> list[Tensor]:
        """The hidden activations sigma(z_i) of a batch, one (batch, width) tensor per hidden layer."""
        _, preacts = self.trace(params, x)
        return [self.act(z) for z in preacts[:-1]]

    def teleport_batch_size(self, requested: int | None) -> int:
        """Samples in one teleport batch (what data-dependent symmetries check their exactness against)."""
        raise NotImplementedError

    def uniform_init(self, generator: torch.Generator) -> list[Tensor]:
        """nn.Linear's default: W and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn on the CPU in float64 from
        ``generator`` and then cast, so the same seed gives the same network on every device and dtype."""
        def uniform(*shape, bound):
            return (torch.rand(*shape, generator=generator, dtype=torch.float64, device="cpu") * 2 - 1) * bound

        params = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            bound = fan_in ** -0.5
            params.append(uniform(fan_out, fan_in, bound=bound))
            if self.bias:
                params.append(uniform(fan_out, bound=bound))
        return [p.to(device=self.device, dtype=self.dtype).requires_grad_(True) for p in params]
