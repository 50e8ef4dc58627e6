"""Data-dependent GL(d) actions between two layers: exact on the teleport batch only (paper eq. 8, arXiv 2205.10637; the follow-up, arXiv 2305.13404).

Torch layout: a layer maps its input H (batch, in) to Z = H W^T + b (batch, out), hidden S = sigma(Z).
With several pairs, later pairs act first: a pair's action leaves the input of its first layer and the output
of its second layer unchanged on the batch, so every pair can use the activations of the untransformed network,
computed once in ``prepare``. For the same reason the ascent objective has a closed form on the batch
(``batch_objective.py``): each action says what its hidden layer becomes (``hidden_after``) and how a gradient
passes back through its rewritten weights (``weight_vjp``), and no weight matrix is rewritten per ascent step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError, SymmetryMismatch, one_of
from .base import Symmetry, grad_norm_sq_at
from .batch_objective import ClosedFormObjective
from .gl_elements import span_basis
from .gl_official import official_pass
from .gl_pairs import GLPairSymmetry
from .layer_pairs import SUBGROUPS, inverse_activation


INVERSES = ("exact", "first_order")
FORMS = ("minimal", "paper", "official")


def _split(params, problem, m):
    """(weight index, bias index or None) of the pair's two layers."""
    return problem.layers[m], problem.layers[m + 1]


@dataclass
class PairData:
    """What a data-dependent action keeps of one pair for one teleport (built once in ``prepare``, read by every
    ascent step): the batch's pre-activations z (batch, d) and s = sigma(z) (the trace's own tensors, not copies),
    the batch subgroup's basis V (or None), and for gl_data the pseudo-inverse of the pair's input."""

    z: Tensor
    s: Tensor
    basis: Tensor | None
    h_pinv: Tensor | None = None


class _BatchPairAction(ClosedFormObjective, GLPairSymmetry):
    """Shared by the data-dependent GL actions: per-teleport pair data, the optional batch subgroup, and the
    closed-form objective."""

    data_dependent = True

    def __init__(self, pairs=None, parametrization: str = "exp", subgroup: str = "full"):
        super().__init__(pairs, parametrization)
        if subgroup not in SUBGROUPS:
            raise one_of("symmetry.subgroup", subgroup, SUBGROUPS)
        self.subgroup = subgroup

    def prepare(self, params, batch):
        self.check_batch(batch[0].shape[0])
        ctx = super().prepare(params, batch)
        with torch.no_grad():
            trace = ctx.trace  # hidden layer m: z = preacts[m], sigma(z) = inputs[m + 1]
            ctx.pairs = {m: self.pair_data(trace.inputs[m], trace.preacts[m], trace.inputs[m + 1]) for m in self.pairs}
        return ctx

    def pair_data(self, h: Tensor, z: Tensor, s: Tensor) -> PairData:
        """Pair data from the pair's input h (batch, in), pre-activations z and hidden s = sigma(z) (batch, d)."""
        raise NotImplementedError

    def max_batch(self, m: int) -> int:
        """The widest teleport batch the action is exact on for pair m."""
        raise NotImplementedError

    def batch_too_wide(self, m: int, batch_size: int) -> str:
        """Why a batch wider than ``max_batch(m)`` cannot be exact, and what to do instead."""
        raise NotImplementedError

    def check_batch(self, batch_size: int) -> None:
        for m in self.pairs:
            if batch_size > self.max_batch(m):
                raise SymmetryMismatch(self.batch_too_wide(m, batch_size))

    def basis(self, m, ctx):
        return ctx.pairs[m].basis

    def sigma_of(self, m: int):
        """sigma of hidden layer m (the network's one activation; a module's pairs may differ: ``module_gl``)."""
        return self.problem.act

    def sigma_inv_of(self, m: int):
        """sigma^-1 of hidden layer m (gl_data)."""
        return self.sigma_inv


class GLData(_BatchPairAction):
    """GL(d_m) acting on hidden layer m through the data, for bijective activations (paper eq. 8).

    Group: GL(d_m) per chosen pair, g = I + T (``parametrization``: how the ascent moves it), with the exact
    inverse (an LU solve).
    Action (paper layout h = inputs x samples, biases absorbed as a row of ones in h):
        W_{m+1} -> W_{m+1} g^-1,   W_m -> W_m + (sigma^-1(g sigma(W_m h)) - W_m h) h^+
    so that sigma(W_m' h) = g sigma(W_m h) and the next layer sees W_{m+1} g^-1 g sigma(W_m h): unchanged.
    The paper writes W_m -> sigma^-1(g sigma(W_m h)) h^+; ours adds the same correction to W_m instead of
    replacing W_m by its projection onto the batch's span, so both agree on the batch, g = I is the identity,
    and W changes only in the span of the batch (``form: paper`` gives the literal eq. 8).
    Exact: on the teleport batch, when h (with its ones column) has full column rank, i.e. batch <= in_m (+1
    with a bias); off the batch the function changes (teleports.jsonl reports it on a held-out batch).
    h^+ is computed once per teleport, in float64. Source: Zhao et al. 2022, eq. 8.
    ``subgroup: batch`` restricts g to I + U V^T with V a basis of the batch's hidden activations (see
    ``BatchSubgroupElement``): all of g's effect on the batch's activations, none of the d x d work (an ascent
    step costs O(d^2 batch) instead of O(d^3)); the part of GL(d) it leaves out only acts through W_{m+1} g^-1
    off the batch's span.
    ``inverse: first_order`` is the official 2022 code's action, W_{m+1} (I - T) in place of W_{m+1} (I + T)^-1
    (with ``form: paper`` and ``parametrization: linear``, its eq. 8 as run). It is NOT on the level set (the loss
    moves by O(||T||^2); 39-98% inside an official regression teleport), so a run must open the guard explicitly
    (``teleport.max_rel_drift=inf``) and every event says ``exact_action: false``. The ascent objective is then the
    generic autograd one (the closed form assumes an exact action).
    ``form: official`` (with ``inverse: first_order``, ``parametrization: linear`` and ``teleport.compound=true``) is
    the official code's whole move, its activations and pseudo-inverses included (``gl_official.py``): the
    published regression numbers come from it.
    """

    name = "gl_data"
    activations = ("leaky_relu", "identity")
    why_not = ("eq. 8 needs an activation that is a bijection of R (relu is not invertible; tanh only on "
               "(-1, 1), where g sigma(z) may leave it). Use symmetry=gl_hidden (any activation) or, for relu, "
               "symmetry=rescale.")

    def __init__(self, pairs=None, parametrization: str = "exp", form: str = "minimal", subgroup: str = "full",
                 inverse: str = "exact"):
        super().__init__(pairs, parametrization, subgroup)
        if form not in FORMS:
            raise one_of("symmetry.form", form, FORMS)
        if inverse not in INVERSES:
            raise one_of("symmetry.inverse", inverse, INVERSES)
        if form == "official" and (inverse, parametrization, subgroup) != ("first_order", "linear", "full"):
            raise ConfigError(
                "symmetry.form=official is the official 2022 code's move as it runs: g = I + T moved additively, "
                "on all of GL(d), with W (I - T) for W g^-1. It needs symmetry.inverse=first_order "
                "symmetry.parametrization=linear symmetry.subgroup=full (got "
                f"{inverse}, {parametrization}, {subgroup}). For an exact compounding teleport use form=minimal "
                "with teleport.compound=true.")
        self.form, self.inverse = form, inverse
        self.exact = inverse == "exact"
        self.warns_unbounded = form != "official"  # the official code's move is unbounded, as published

    def check_run(self, problem, teleporter, optimizer) -> None:
        super().check_run(problem, teleporter, optimizer)
        if not self.exact and getattr(teleporter, "max_rel_drift", None) != math.inf:
            raise ConfigError(
                "symmetry.inverse=first_order is the official 2022 code's action W (I - T) for W (I + T)^-1, which "
                "leaves the level set (the loss moves by O(||T||^2): 39-98% inside an official regression "
                "teleport), so the teleport guard would roll every such teleport back "
                f"(teleport.max_rel_drift={getattr(teleporter, 'max_rel_drift', None)!r}). To reproduce the "
                "published numbers, open the guard explicitly with teleport.max_rel_drift=inf (every drift is still "
                "measured and logged); otherwise use symmetry.inverse=exact.")
        if self.form == "official" and not getattr(teleporter, "compound", False):
            raise ConfigError(
                "symmetry.form=official is one step of the official teleport, re-based on the weights after every "
                "ascent step; it needs teleport=gradient_ascent with teleport.compound=true (every step starts at "
                "T = 0, as the official code's).")

    def bind(self, problem) -> None:
        super().bind(problem)
        self.sigma, self.sigma_inv = problem.act, inverse_activation(problem.activation, problem.slope)

    def max_batch(self, m: int) -> int:
        """The input width of layer m (+1 for the bias column): the input then has a right inverse."""
        return self.problem.sizes[m] + (1 if self.problem.bias else 0)

    def batch_too_wide(self, m, batch_size):
        return (f"Symmetry 'gl_data' cannot be exact on a teleport batch of {batch_size} samples for pair {m}: "
                f"the input of layer {m} is only {self.max_batch(m)} wide"
                f"{' (with the bias column)' if self.problem.bias else ''}, so it has no right inverse "
                f"(eq. 8 needs batch <= input width). Use teleport.batch_size <= {self.max_batch(m)}, "
                "leave this pair out with symmetry.pairs, or use symmetry=gl_hidden.")

    def pair_data(self, h, z, s):
        """The first layer's input H (with ones) gives H^+; subgroup batch: g moves only span(sigma(z))."""
        if self.problem.bias:
            h = torch.cat([h, torch.ones_like(h[:, :1])], dim=1)
        # float64 pinv: H H^+ = I to ~1e-15, so float32 teleports stay within float32 rounding
        h_pinv = torch.linalg.pinv(h.double()).to(h.dtype)  # (in+1, batch)
        return PairData(z, s, span_basis(s) if self.subgroup == "batch" else None, h_pinv)

    def hidden_after(self, g, m, ctx):
        s_new = g.rows(ctx.pairs[m].s)  # g sigma(z) for every sample
        return self.sigma_inv_of(m)(s_new), s_new  # z': the pre-activations that give it

    def weight_vjp(self, l, delta, params, elements, hidden, ctx):
        """W'_l = (W_l + Delta_l) g_{l-1}^-1: Delta_l = ((z'_l - z_l)^T h^+^T)[:, :n_l] when pair l acts (its data
        term), g_{l-1} when pair l-1 acts (a solve with batch-sized right-hand sides)."""
        u = delta @ params[self.problem.layers[l][0]]
        if l in elements:
            data = ctx.pairs[l]
            u = u + (delta @ (hidden[l][0] - data.z).T) @ data.h_pinv[:self.problem.sizes[l]].T
        return elements[l - 1].right_inv(u) if l - 1 in elements else u

    @property
    def uses_closed_form(self) -> bool:
        return self.form == "minimal" and self.exact

    def grad_norm_sq(self, xi, params, batch, ctx, create_graph: bool = True):
        if self.form == "official":  # the official objective pass (its own activations and pseudo-inverses)
            return grad_norm_sq_at(self.problem, official_pass(self, xi, params, ctx, True), batch, create_graph)
        if not self.uses_closed_form:  # eq. 8 replaces W_m outside the batch's span too: the generic objective
            return Symmetry.grad_norm_sq(self, xi, params, batch, ctx, create_graph)
        return super().grad_norm_sq(xi, params, batch, ctx, create_graph)

    def act(self, xi, params, ctx):
        if self.form == "official":
            return official_pass(self, xi, params, ctx, False)
        p = self.problem
        out = list(params)
        for T, m in zip(xi, self.pairs):
            (w0, b0), (w1, _) = _split(params, p, m)
            g = self.element(T, m, ctx)
            h_pinv, z = ctx.pairs[m].h_pinv, ctx.pairs[m].z
            z_new = self.hidden_after(g, m, ctx)[0]  # (batch, d): pre-activations giving g sigma(z)
            if self.form == "minimal":
                delta = (h_pinv @ (z_new - z)).T  # (d, in+1): the minimal-norm change with H delta^T = z_new - z
                w_aug = torch.cat([out[w0], out[b0][:, None]], 1) if b0 is not None else out[w0]
                w_aug = w_aug + delta
            else:
                w_aug = (h_pinv @ z_new).T
            out[w0] = w_aug[:, :p.sizes[m]]
            if b0 is not None:
                out[b0] = w_aug[:, p.sizes[m]]
            # W g^-1 exactly, or the official first-order W (I - T) = 2 W - W g
            out[w1] = g.right_inv(out[w1]) if self.exact else 2 * out[w1] - g.right(out[w1])
        return out


class GLHidden(_BatchPairAction):
    """GL(d_m) acting on hidden layer m, the 2024 follow-up's form; any activation.

    Group: GL(d_m) per chosen pair, g = I + T (``parametrization``: how the ascent moves it).
    Action (paper layout, h = input of layer m with a ones row for the bias, S = sigma(W_m h), S_g = sigma(g W_m h)):
        W_m -> g W_m (its bias -> g b_m),   W_{m+1} -> W_{m+1} + W_{m+1} (S - S_g) S_g^+
    so W_{m+1}' S_g = W_{m+1} S on the batch (the follow-up writes W_{m+1} S S_g^+, equal on the batch; ours is
    the identity at g = I). S_g^+ depends on g, so it is recomputed (differentiably, by a QR) at every ascent step.
    Exact: on the teleport batch, when S_g has full column rank, i.e. batch <= d_m (hidden width).
    ``subgroup: batch``: g = I + U V^T with V a basis of the batch's pre-activations z (as for gl_data).
    Source: Zhao, Gower, Walters, Yu 2024 (arXiv 2305.13404).
    """

    name = "gl_hidden"
    uses_inverse = False  # W_{m+1} changes by a pseudo-inverse of the batch, never by g^-1

    def max_batch(self, m: int) -> int:
        """The hidden width: sigma(g W h) then has a left inverse on the batch."""
        return self.width(m)

    def batch_too_wide(self, m, batch_size):
        return (f"Symmetry 'gl_hidden' cannot be exact on a teleport batch of {batch_size} samples for pair "
                f"{m}: hidden layer {m} is only {self.width(m)} wide, so sigma(g W h) has no left inverse on "
                f"the batch (needs batch <= hidden width). Use teleport.batch_size <= {self.width(m)} or "
                "choose other pairs with symmetry.pairs.")

    def pair_data(self, h, z, s):
        """subgroup batch: g moves only the span of the batch's pre-activations z, which it acts on."""
        return PairData(z, s, span_basis(z) if self.subgroup == "batch" else None)

    def hidden_after(self, g, m, ctx):
        z_new = g.rows(ctx.pairs[m].z)
        return z_new, self.sigma_of(m)(z_new)

    def weight_vjp(self, l, delta, params, elements, hidden, ctx):
        """W'_l = g_l W_l (I + (S - S_g)^T R^-1 Q^T) with S_g^T = Q R (hidden layer l-1): each factor only where
        its pair acts, applied to batch-sized matrices from the right."""
        u = (elements[l].right(delta) if l in elements else delta) @ params[self.problem.layers[l][0]]
        if l - 1 in elements:
            s, s_g = ctx.pairs[l - 1].s, hidden[l - 1][1]
            q, r = torch.linalg.qr(s_g.T)
            u = u + torch.linalg.solve_triangular(r, u @ (s - s_g).T, upper=True, left=False) @ q.T
        return u

    def act(self, xi, params, ctx):
        p = self.problem
        out = list(params)
        for T, m in zip(xi, self.pairs):
            (w0, b0), (w1, _) = _split(params, p, m)
            g = self.element(T, m, ctx)
            s, s_g = ctx.pairs[m].s, self.hidden_after(g, m, ctx)[1]  # (batch, d)
            out[w0] = g.left(out[w0])
            if b0 is not None:
                out[b0] = g.left(out[b0])
            # W1' = W1 + W1 (S - S_g)^T (S_g^+)^T  (torch layout of the formula above), with S_g^+ from a
            # reduced QR of S_g^T = Q R: S_g^+ = Q R^-T when S_g has full row rank (the exactness condition).
            # A QR and a triangular solve differentiate far more cheaply than pinv's SVD.
            q, r = torch.linalg.qr(s_g.T)  # q: (d, batch), r: (batch, batch)
            coeff = torch.linalg.solve_triangular(r.T, (s - s_g) @ out[w1].T, upper=False)  # R^-T (S - S_g) W1^T
            out[w1] = out[w1] + (q @ coeff).T
        return out

