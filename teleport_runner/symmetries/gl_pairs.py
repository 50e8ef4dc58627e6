"""GL(d) on the layer pairs of a network: the coordinates T of g = I + T, how the ascent moves them (``exp``
steps in the Lie algebra, or ``linear`` additive steps), and the element forms it keeps (``gl_elements``)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..errors import one_of
from .base import Coords
from .exponential import matrix_exps, phi_block, phi_of
from .gl_elements import (BatchSubgroupElement, DenseElement, FactoredElement, KeptInverseElement, ProbedElement,
                          TangentElement, group_element, step_basis)
from .layer_pairs import PARAMETRIZATIONS, LayerPairSymmetry


class GLPairSymmetry(LayerPairSymmetry):
    """GL(d_m) on each chosen pair's hidden layer, g = I + T, and how the ascent moves it.

    Args:
        pairs: as ``LayerPairSymmetry``.
        parametrization: how the ascent moves g. The coordinates are always T = g - I (g = I + T, the identity at
            T = 0; ``bound`` says what ``teleport.max_group_norm`` bounds); ``exp`` (default) takes Lie-algebra steps,
            g <- exp(lr A) g with A = dF/dg g^T the gradient of the objective F at the current g in the
            direction of a left multiplication (the paper's "T initialized to 0" at every step, with the exact
            exponential instead of I + T): every iterate is a product of exponentials, so invertible with
            det > 0, and an ascent step needs one forward exponential of all pairs (``exponential.matrix_exps``;
            no derivative of it).
            ``linear`` takes additive steps T <- T + lr dF/dT, the paper's g = I + T: no exponential at all,
            but g is singular where T has an eigenvalue -1 (keep ``max_group_norm`` < 1). Both exact: W g^-1
            is an LU solve (or Woodbury in the batch subgroup), never the official I - T.
    """

    def __init__(self, pairs: Sequence[int] | None = None, parametrization: str = "exp"):
        if parametrization not in PARAMETRIZATIONS:
            raise one_of("symmetry.parametrization", parametrization, PARAMETRIZATIONS)
        super().__init__(pairs)
        self.parametrization = parametrization

    def element(self, T: Tensor, m: int, ctx):
        """The group element of pair m with coordinates T (a ``FactoredElement`` is one itself: its products with the
        weights cost O(d R) per row, never d x d work)."""
        if isinstance(T, FactoredElement):
            return T
        basis = self.basis(m, ctx)
        if basis is None:
            return DenseElement(T)
        return BatchSubgroupElement(T, basis)

    def identity(self, params, ctx) -> Coords:
        """Zeros; a pair whose ascent is factored starts as an empty ``FactoredElement`` (rank 0)."""
        factored = self.factored_pairs(ctx)
        return [FactoredElement.identity(self.width(m), params[0]) if m in factored else T
                for T, m in zip(super().identity(params, ctx), self.pairs)]

    def elements(self, xi: Coords, ctx) -> dict:
        """{pair: group element} for all pairs (what the closed-form objective reads)."""
        return {m: self.element(T, m, ctx) for T, m in zip(xi, self.pairs)}

    def sample(self, params, ctx, generator, scale) -> Coords:
        """g = exp(S) (``exp``; in the batch subgroup exp(S V^T)) or I + S (``linear``), S ~ scale N(0, 1) / sqrt(d):
        the spectral norm of S is then about 2 scale whatever the width."""
        S = super().sample(params, ctx, generator, scale)
        if self.parametrization == "linear":
            return S
        return self._times_exp([torch.zeros_like(s) for s in S], S, ctx)

    @property
    def bound(self) -> str:
        """``exp``: ``max_group_norm`` bounds the ascent's path in the Lie algebra, sum_k ||lr A_k||_F, which keeps
        the singular values of g within exp(+-bound) as ||T|| did for g = exp(T); ``linear``: ||T||_F itself."""
        return "path" if self.parametrization == "exp" else "point"

    #: With ``exp``, a dense pair's ascent direction is computed in factored form (``ProbedElement``) when its width
    #: is at least this many times the teleport batch: A then has rank <= 3 x batch << d, and from the identity the
    #: iterate is the product of its steps (``FactoredElement``): a step costs O(d R batch) for the steps' total
    #: rank R, instead of the O(d^3) of a d x d exponential and LU factorization. ``linear`` is never factored:
    #: its dense step is already O(d^2 batch) but for gl_data's one LU, and its point bound rescales T.
    factored_min_width_per_sample = 6
    #: closed-form objective available (``batch_objective.ClosedFormObjective`` sets it)
    uses_closed_form = False
    #: the action multiplies by g^-1 (then a factored step also keeps (I + T)^-1 up to date)
    uses_inverse = True

    def factored_pairs(self, ctx) -> list[int]:
        """The dense pairs whose direction is taken in factored form at this teleport (wide layers, ``exp``)."""
        if not self.uses_closed_form or self.parametrization != "exp" or not ctx.factored:
            return []
        batch = ctx.trace.inputs[0].shape[0]
        return [m for m in self.pairs if self.basis(m, ctx) is None
                and self.width(m) >= self.factored_min_width_per_sample * batch]

    def value_and_direction(self, xi, params, batch, ctx):
        """As ``Symmetry.value_and_direction``; with ``exp`` and the closed-form objective, the Lie-algebra gradient
        is taken directly: a dense or batch-subgroup pair at (I + E V^T) g for a zero leaf E (``TangentElement``),
        a wide dense pair in factored form P Q^T (``ProbedElement``), returned as X = P L in the step basis
        V = Q L^-T kept in ``ctx.step_bases`` (``step_basis``)."""
        if not self.uses_closed_form or self.parametrization != "exp":
            return super().value_and_direction(xi, params, batch, ctx)
        factored = self.factored_pairs(ctx)
        with torch.enable_grad():
            elements = {m: ProbedElement(self._factored_element(T, m, ctx)) if m in factored
                        else self._tangent_element(T, m, ctx) for T, m in zip(xi, self.pairs)}
            objective = self.objective_at(elements, params, ctx)
            tangents = [elements[m].E for m in self.pairs if m not in factored]
            probes = [record[0] for m in factored for record in elements[m].records]
            grads = torch.autograd.grad(objective, tangents + probes, allow_unused=True)
        tangent_grads, probe_grads = iter(grads[:len(tangents)]), grads[len(tangents):]
        directions = []
        for m in self.pairs:
            element = elements[m]
            if m not in factored:
                G = next(tangent_grads)
                directions.append(torch.zeros_like(element.E) if G is None else G)
                continue
            P, Q = element.factors(probe_grads[:len(element.records)])
            probe_grads = probe_grads[len(element.records):]
            X, ctx.step_bases[m] = step_basis(P, Q)
            directions.append(X)
        return objective.detach(), directions

    def orbit_curve(self, xi, M, t, ctx) -> Coords:
        """Coordinates of exp(t M) g - I for each pair (dense T; the curvature objective's orbit curves)."""
        out = []
        for T, X, m in zip(xi, M, self.pairs):
            if self.basis(m, ctx) is not None or isinstance(T, FactoredElement):
                raise AssertionError("orbit curves need dense coordinates (Curvature.check, Objective.bind)")
            out.append(torch.linalg.matrix_exp(t * X) @ group_element(T) - torch.eye(T.shape[0], dtype=T.dtype,
                                                                                     device=T.device))
        return out

    def _tangent_element(self, T: Tensor, m: int, ctx) -> TangentElement:
        """(I + E V^T) g at the iterate g (no gradient through it) for a zero leaf E: dense pairs with their kept
        inverse (``_inverse``), batch-subgroup pairs with their r x r Woodbury term."""
        T, V = T.detach(), self.basis(m, ctx)
        if V is None:
            base = KeptInverseElement(T, self._inverse(T, m, ctx) if self.uses_inverse else None)
        else:
            base = BatchSubgroupElement(T, V)
        return TangentElement(base, torch.zeros_like(T, requires_grad=True), V)

    def _factored_element(self, T, m: int, ctx):
        """The element a factored direction is taken at: the iterate itself while it is a ``FactoredElement``, else
        the dense T with its kept inverse."""
        if isinstance(T, FactoredElement):
            return T
        return KeptInverseElement(T.detach(), self._inverse(T, m, ctx) if self.uses_inverse else None)

    def _inverse(self, T: Tensor, m: int, ctx) -> Tensor:
        """(I + T)^-1: the one the last step kept for this very tensor T (same storage, not modified since:
        ``retract``'s output, as the solver passes it back), else an LU inverse (once per teleport)."""
        C = self._kept_inverse(T, m, ctx)
        if C is not None:
            return C
        T = T.detach()
        C = torch.linalg.inv_ex(group_element(T))[0]
        ctx.inverses[m] = (T, T._version, C)
        return C

    @staticmethod
    def _kept_inverse(T: Tensor, m: int, ctx) -> Tensor | None:
        """(I + T)^-1 as kept in ``ctx.inverses`` for this very tensor T (same storage, not modified since), or None."""
        cached = getattr(ctx, "inverses", {}).get(m)
        if cached is not None:
            ref, version, C = cached
            if ref.data_ptr() == T.data_ptr() and ref._version == version and ref.shape == T.shape:
                return C
        return None

    def ascent_direction(self, xi, grads, ctx) -> Coords:
        return [self._direction(T, G, m, ctx) for T, G, m in zip(xi, grads, self.pairs)]

    def _direction(self, T, G, m, ctx) -> Tensor:
        """``linear``: dF/dT. ``exp``: the Lie-algebra gradient A = dF/dg g^T (the gradient of F(exp(A) g) at A = 0);
        in the batch subgroup A = X V^T, returned as X = dF/dU (I_r + V^T U)^T."""
        if self.parametrization == "linear":
            return G
        V = self.basis(m, ctx)
        return torch.addmm(G, G, T.T if V is None else T.T @ V)  # G (I + T)^T, G (I + V^T U)^T

    def retract(self, xi, step, ctx) -> Coords:
        """``linear``: T + step. ``exp``: the coordinates of exp(A) g for the algebra step A (a factored step X
        means A = X V^T with V = ``ctx.step_bases[m]``, and (I + T')^-1 is updated in O(d^2 r) for the next step)."""
        if self.parametrization == "linear":
            return super().retract(xi, step, ctx)
        return self._times_exp(xi, step, ctx, getattr(ctx, "step_bases", None))

    def _times_exp(self, xi, steps, ctx, step_bases=None) -> Coords:
        """Coordinates of exp(A_m) g_m for every pair, all exponentials in one call. Dense: A = X, T' = exp(X) (I + T)
        - I, and a kept (I + T)^-1 (``ctx.inverses``) becomes (I + T)^-1 exp(-X). Batch subgroup (coordinates U, basis
        V) or a factored step (dense T, step basis V): A = X V^T, exp(X V^T) = I + Y V^T with Y = X phi(V^T X) (a
        2r x 2r exponential); then U' = U + Y (I_r + V^T U), or T' = T + Y V^T (I + T) with (I + T')^-1 by Woodbury
        (an r x r solve), or for a ``FactoredElement`` new factors (``FactoredElement.times_exp``)."""
        step_bases = {} if step_bases is None else step_bases
        kinds = []  # per pair: (kind, V)
        blocks = []
        for X, m in zip(steps, self.pairs):
            V = step_bases.pop(m, None)
            if V is not None:
                kinds.append(("factored", V))
                blocks.append(phi_block(V.T @ X))
            else:
                V = self.basis(m, ctx)
                kinds.append(("dense", None) if V is None else ("subgroup", V))
                blocks.append(X if V is None else phi_block(V.T @ X))
        # a dense pair's kept inverse (the tangent element's) moves by exp(-X), from the same call: a larger
        # block-diagonal matrix costs next to nothing there, an LU solve per pair ~7 us
        kept = {m: C for T, m, (kind, _) in zip(xi, self.pairs, kinds) if kind == "dense" and self.uses_inverse
                and (C := self._kept_inverse(T, m, ctx)) is not None}
        exps = matrix_exps(blocks + [-X for X, m in zip(steps, self.pairs) if m in kept])
        inverse_exps = dict(zip(kept, exps[len(blocks):]))
        exps = iter(exps[:len(blocks)])
        out = []
        for T, X, m, (kind, V) in zip(xi, steps, self.pairs, kinds):
            if kind == "dense":
                step_exp = next(exps)
                T_new = torch.addmm(step_exp - torch.eye(T.shape[0], device=T.device, dtype=T.dtype), step_exp, T)
                out.append(T_new)
                if m in kept:  # g'^-1 = g^-1 exp(-X)
                    ctx.inverses[m] = (T_new, T_new._version, kept[m] @ inverse_exps[m])
                continue
            r = V.shape[1]
            Y = X @ phi_of(next(exps))
            if kind == "subgroup":
                out.append(torch.addmm(T + Y, Y, V.T @ T))
                continue
            if isinstance(T, FactoredElement):
                if T.rank + r <= T.width:
                    out.append(T.times_exp(Y, V))
                    continue
                T = self._to_dense(T, m, ctx)
            T_new = torch.addmm(T, Y, torch.addmm(V.T, V.T, T))  # T + Y V^T (I + T)
            out.append(T_new)
            if not self.uses_inverse:
                continue
            # Woodbury: g' = (I + Y V^T) g, so g'^-1 = C - C Y (I_r + V^T Y)^-1 V^T, and I_r + V^T Y = exp(V^T X)
            C = ctx.inverses[m][2]
            inner = torch.eye(r, device=T.device, dtype=T.dtype) + V.T @ Y
            C_new = torch.addmm(C, C @ Y, torch.linalg.solve_ex(inner, V.T)[0], alpha=-1)
            ctx.inverses[m] = (T_new, T_new._version, C_new)
        return out

    def _to_dense(self, element: FactoredElement, m: int, ctx) -> Tensor:
        """T = g - I from the factors, with g^-1 kept in ``ctx.inverses``: where a factored iterate's rank would
        pass the width, the dense form is the cheaper one from there on (formed once, O(d^2 R))."""
        T = element.dense()
        if self.uses_inverse:
            ctx.inverses[m] = (T, T._version, element.dense_inverse())
        return T
