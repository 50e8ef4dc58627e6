"""Positive rescaling on the layer pairs of any module (``problem=module``, ``Teleporter``): Linear and Conv2d.

The sites come from the module's structure (``discovery.py``); the action is ``data_free.rescale_factors``.
"""
from __future__ import annotations

import warnings

import torch

from ..errors import ConfigError, SymmetryMismatch
from .base import Symmetry
from .data_free import ElementwiseAction, rescale_factors
from .discovery import Site, discover
from .layer_pairs import warn_unbounded


class ModuleRescale(ElementwiseAction, Symmetry):
    """Positive rescaling of a module's hidden units and convolution channels, data-free.

    Group: (R_{>0})^{c} per discovered site (c units or channels), d = exp(t) for t in R^c (abelian: additive
    steps on t are Lie-algebra steps; ``max_group_norm`` bounds ||t|| over all sites).
    Action: the producer's output unit or channel k (its weight row or filter, and its bias) times d_k; the
    consumer's inputs from it (input channel k of a convolution, or the H*W columns channel k flattens into in a
    Linear) times 1/d_k.
    Exact: on every input, because ReLU, LeakyReLU, max and average pooling and flattening commute with a
    positive per-channel scale (sigma(d z) = d sigma(z) for d > 0, max(d a, d b) = d max(a, b)); the guard still
    measures the loss, and for modules also the loss on held-out data, before it commits.
    Objective: ||grad L(g·w)||^2 in closed form. L(g·w) = L(w) for every w, so grad L(g·w) = grad L(w) / F for
    the elementwise factor F of the action: the gradient is taken once per teleport (``prepare``), and an ascent
    step costs a few elementwise operations, no forward or backward through the network.
    Optimizer state (``transform``): as ``data_free.Rescale``. Source: Meng et al., G-SGD, ICLR 2019 (ReLU
    networks, including convolutions); Neyshabur et al., Path-SGD, 2015.
    """

    name = "rescale"
    verify_off_batch = True  # the sites come from a user's module: check off the batch as well

    def __init__(self, pairs=None):
        self.pairs_requested = None if pairs is None else list(pairs)

    def bind(self, problem) -> None:
        if not getattr(problem, "is_module", False):
            raise SymmetryMismatch(f"ModuleRescale acts on problem=module (an nn.Module); got {problem.name!r}.")
        sites, self.skipped = discover(problem.model, problem.example_input())
        self.found = sites
        index = {name: i for i, name in enumerate(problem.names)}
        model = type(problem.model).__name__
        if not sites:
            raise SymmetryMismatch(
                f"Symmetry 'rescale' found no teleportable layer pair in {model}: "
                + ("; ".join(self.skipped) or "it has fewer than two Linear/Conv2d layers") + ". A pair is a Linear "
                "or Conv2d layer followed, through ReLU/LeakyReLU, pooling, dropout or a flatten only, by another "
                "Linear or Conv2d. Use teleport=none to train it without teleports.")
        pairs = range(len(sites)) if self.pairs_requested is None else self.pairs_requested
        bad = [p for p in pairs if not isinstance(p, int) or not 0 <= p < len(sites)]
        if bad or not pairs or len(set(pairs)) != len(list(pairs)):
            raise ConfigError(f"Invalid symmetry.pairs: {self.pairs_requested!r}; {model} has {len(sites)} "
                              f"teleportable pairs, so use null or distinct indices in 0..{len(sites) - 1} "
                              "(print_pairs=true lists them).")
        self.sites = [sites[p] for p in pairs]
        self.slots = [(index[f"{s.producer}.weight"], index.get(f"{s.producer}.bias"), index[f"{s.consumer}.weight"],
                       s.repeat) for s in self.sites]
        if self.skipped:
            warnings.warn(f"Symmetry 'rescale' on {model} skips: {'; '.join(self.skipped)}.", stacklevel=2)
        super().bind(problem)

    def describe(self) -> list[str]:
        """One line per discovered pair (its index for ``symmetry.pairs``), then the skipped layers."""
        chosen = {id(s) for s in self.sites}
        lines = [f"pair {i}: {s.describe()}" + ("" if id(s) in chosen else " (not selected)")
                 for i, s in enumerate(self.found)]
        return lines + [f"skipped {line}" for line in self.skipped]

    def identity(self, params, ctx):
        return [params[0].new_zeros(s.channels) for s in self.sites]

    def sample(self, params, ctx, generator, scale):
        """Log-scales ~ scale N(0, 1) / sqrt(c) per site."""
        return [scale * torch.randn(s.channels, generator=generator, device=params[0].device, dtype=params[0].dtype)
                / s.channels ** 0.5 for s in self.sites]

    def _factors(self, xi, params):
        return rescale_factors(params, [(t, *slot) for t, slot in zip(xi, self.slots)])

    def prepare(self, params, batch):
        """The squared gradient at w on the teleport batch (what the closed-form objective rescales)."""
        w = [p.detach().requires_grad_(True) for p in params]
        with torch.enable_grad():
            grads = torch.autograd.grad(self.problem.loss(w, batch), w)
        return [g.square() for g in grads]

    def grad_norm_sq(self, xi, params, batch, ctx, create_graph: bool = True):
        """sum_i ||grad_i / F_i||^2 (``ctx``: the squared gradients at w); differentiable in xi."""
        total = params[0].new_zeros(())
        for sq, f in zip(ctx, self._factors(xi, params)):
            total = total + (sq.sum() if f is None else (sq / f.square()).sum())
        return total

    def check_run(self, problem, teleporter, optimizer) -> None:
        super().check_run(problem, teleporter, optimizer)
        warn_unbounded(self.name, teleporter)


__all__ = ["ModuleRescale", "Site"]
