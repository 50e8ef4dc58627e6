"""Data-free layer symmetries (exact on every input) and how they carry optimizer state.

Both actions are linear in the parameters: W_m -> A W_m (bias b_m -> A b_m), W_{m+1} -> W_{m+1} A^-1 with
A = g (GL) or diag(d) (rescaling). Since L'(w') = L(w), gradients map by the inverse transpose:
grad W_m -> A^-T grad W_m, grad W_{m+1} -> grad W_{m+1} A^T. ``transform_state`` applies that map to every
gradient-like optimizer buffer, and for diagonal A the squared map to squared-gradient buffers.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from .batch_objective import ClosedFormObjective
from .gl_elements import dense_coords, group_matrices
from .gl_pairs import GLPairSymmetry
from .layer_pairs import LayerPairSymmetry

# Per optimizer class: how each state buffer transforms. grad: like a gradient. sq: like a squared gradient
# (elementwise). ratio: grad / sqrt(sq) (RMSprop's momentum buffer), unchanged by a diagonal map.
STATE_KINDS = {
    torch.optim.SGD: {"momentum_buffer": "grad"},
    torch.optim.Adagrad: {"sum": "sq"},
    torch.optim.RMSprop: {"square_avg": "sq", "grad_avg": "grad", "momentum_buffer": "ratio"},
    torch.optim.Adam: {"exp_avg": "grad", "exp_avg_sq": "sq", "max_exp_avg_sq": "sq"},
    torch.optim.AdamW: {"exp_avg": "grad", "exp_avg_sq": "sq", "max_exp_avg_sq": "sq"},
}


def state_kinds(optimizer, symmetry_name: str) -> dict:
    kinds = STATE_KINDS.get(type(optimizer))
    if kinds is None:
        raise ConfigError(
            f"teleport.optimizer_state=transform does not know how {type(optimizer).__name__}'s state moves under "
            f"symmetry {symmetry_name!r}. Supported optimizers: "
            f"{', '.join(c.__name__ for c in STATE_KINDS)}; otherwise use optimizer_state=keep or reset.")
    return kinds


class StateMaps:
    """Mixin: ``transform_state`` from the subclass's maps of a gradient (``_grad_map``), a squared gradient
    (``_square_maps``) and RMSprop's ratio buffer (``_ratio_map``) under the action."""

    def check_state_policy(self, optimizer) -> None:
        self.state_kinds = state_kinds(optimizer, self.name)

    def transform_state(self, xi, params, ctx, states):
        kinds = getattr(self, "state_kinds", None)
        if kinds is None:
            raise ConfigError(f"Symmetry {self.name!r}: check_state_policy(optimizer) was not called before "
                              "transform_state; train.build calls it for teleport.optimizer_state=transform.")
        grad_maps = self._grad_map(xi, params)
        sq_maps = self._square_maps(xi, params)
        out = []
        for i, state in enumerate(states):
            new = dict(state)
            for key, value in state.items():
                kind = kinds.get(key)
                if kind is None or not torch.is_tensor(value) or value.shape != params[i].shape:
                    continue  # step counters and the like
                if kind == "grad":
                    new[key] = grad_maps[i](value)
                elif kind == "sq":
                    new[key] = sq_maps[i](value)
                elif kind == "ratio":
                    new[key] = self._ratio_map(i, value, xi, params)
            out.append(new)
        return out


class ElementwiseAction(StateMaps):
    """Mixin for actions w' = F * w with an elementwise factor F per parameter (``_factors``): the action, and
    optimizer state mapped by 1/F (gradients) and 1/F^2 (squared gradients); RMSprop's ratio is unchanged."""

    def _factors(self, xi, params) -> list[Tensor | None]:
        raise NotImplementedError

    def act(self, xi, params, ctx):
        # Elementwise instead of diag matrices: same result, no d x d products.
        return [p if f is None else p * f for p, f in zip(params, self._factors(xi, params))]

    def _grad_map(self, xi, params):
        return [(lambda f: lambda v: v if f is None else v / f)(f) for f in self._factors(xi, params)]

    def _square_maps(self, xi, params):
        return [(lambda f: lambda v: v if f is None else v / f.square())(f) for f in self._factors(xi, params)]

    def _ratio_map(self, i, value, xi, params):
        return value.clone()


class _LinearLayerAction(StateMaps, LayerPairSymmetry):
    """Shared machinery: per pair a matrix A and its inverse, from which transform_state maps optimizer state
    (each subclass writes its own ``act``, which avoids forming A^-1: a solve for GL, elementwise for rescaling)."""

    def matrices(self, xi) -> list[tuple[int, Tensor, Tensor]]:
        raise NotImplementedError

    def _grad_map(self, xi, params):
        """Functions mapping each parameter's gradient to the gradient at g·w (and, for diagonal A, the factor)."""
        maps = [lambda t: t for _ in params]
        for m, A, A_inv in self.matrices(xi):
            (w0, b0), (w1, _) = self.problem.layers[m], self.problem.layers[m + 1]
            left, right = A_inv.T, A.T  # grad W_m -> A^-T grad W_m ; grad W_{m+1} -> grad W_{m+1} A^T
            maps[w0] = (lambda f, M: lambda t: M @ f(t))(maps[w0], left)
            if b0 is not None:
                maps[b0] = (lambda f, M: lambda t: M @ f(t))(maps[b0], left)
            maps[w1] = (lambda f, M: lambda t: f(t) @ M)(maps[w1], right)
        return maps


class GLLinear(ClosedFormObjective, GLPairSymmetry, _LinearLayerAction):
    """GL(d_m) between two layers of a linear network (identity activation), data-free.

    Group: GL(d_m) per chosen pair, g = I + T (``parametrization`` sets how the ascent moves it), exact inverse.
    Action: W_m -> g W_m (bias b_m -> g b_m), W_{m+1} -> W_{m+1} g^-1.
    Exact: on every input, because W_{m+1} g^-1 (g (W_m h + b_m)) = W_{m+1} (W_m h + b_m).
    Optimizer state (``transform``): gradient-like buffers map by g^-T / g^T; squared-gradient buffers
    (Adagrad, RMSprop, Adam) have no such map under a non-diagonal g and are refused.
    Source: Zhao et al. 2022, §4 (linear networks).
    Ascent objective: closed form on the teleport batch (``batch_objective.py``): hidden layer m becomes z_m g^T.
    """

    name = "gl_linear"
    activations = ("identity",)
    why_not = ("the GL action passes g through the activation, which only the identity allows. Use "
               "symmetry=gl_data or gl_hidden (data-dependent) or, for relu/leaky_relu, symmetry=rescale.")

    def matrices(self, xi):
        return [(m, *group_matrices(dense_coords(T))) for T, m in zip(xi, self.pairs)]

    def hidden_after(self, g, m, ctx):
        z_new = g.rows(ctx.trace.preacts[m])
        return z_new, z_new  # identity activation

    def weight_vjp(self, l, delta, params, elements, hidden, ctx):
        """W'_l = g_l W_l g_{l-1}^-1, each factor only where its pair acts."""
        u = (elements[l].right(delta) if l in elements else delta) @ params[self.problem.layers[l][0]]
        return elements[l - 1].right_inv(u) if l - 1 in elements else u

    def act(self, xi, params, ctx):
        out = list(params)  # W_{m+1} g^-1 by a solve: no explicit inverse on the ascent path
        for T, m in zip(xi, self.pairs):
            (w0, b0), (w1, _) = self.problem.layers[m], self.problem.layers[m + 1]
            g = self.element(T, m, ctx)
            out[w0] = g.left(out[w0])
            if b0 is not None:
                out[b0] = g.left(out[b0])
            out[w1] = g.right_inv(out[w1])
        return out

    def check_state_policy(self, optimizer) -> None:
        kinds = state_kinds(optimizer, self.name)
        bad = sorted(k for k, v in kinds.items() if v != "grad")
        if bad:
            raise ConfigError(
                f"teleport.optimizer_state=transform with symmetry 'gl_linear' cannot carry "
                f"{type(optimizer).__name__}'s squared-gradient state {bad}: under a non-diagonal g it has no exact "
                "image. Use optimizer_state=keep or reset, or an optimizer whose state is gradient-like "
                "(optimizer=sgd or momentum).")
        self.state_kinds = kinds

    def _square_maps(self, xi, params):
        return [None] * len(params)  # refused in check_state_policy

    def _ratio_map(self, i, value, xi, params):
        raise AssertionError("refused in check_state_policy")


class Rescale(ClosedFormObjective, ElementwiseAction, _LinearLayerAction):
    """Positive rescaling of hidden units for positively homogeneous activations (ReLU, LeakyReLU), data-free.

    Group: (R_{>0})^{d_m} per chosen pair, d = exp(t) for t in R^{d_m} (the group is abelian, so the solver's
    additive steps on the log-scales t are its Lie-algebra steps; ``max_group_norm`` bounds ||t||).
    Action: W_m -> diag(d) W_m (bias b_m -> d * b_m), W_{m+1} -> W_{m+1} diag(1/d).
    Exact: on every input, because sigma(d z) = d sigma(z) for d > 0.
    Optimizer state (``transform``): gradient-like buffers scale by the inverse factor (1/d on W_m's rows,
    d on W_{m+1}'s columns), squared-gradient buffers by its square; RMSprop's momentum (grad / sqrt(avg))
    is unchanged. Source: Meng et al., G-SGD, ICLR 2019; Neyshabur et al., Path-SGD, 2015.
    Ascent objective: closed form on the teleport batch (``batch_objective.py``): hidden layer m becomes
    d * z_m, d * sigma(z_m), and gradients pass back through W'_l elementwise.
    """

    name = "rescale"
    activations = ("relu", "leaky_relu", "identity")
    why_not = "rescaling needs sigma(d z) = d sigma(z) for d > 0 (positive homogeneity); tanh is not."

    def for_problem(self, problem):
        if getattr(problem, "is_module", False):  # a user's module: the pairs are discovered from its structure
            from .conv_rescale import ModuleRescale

            return ModuleRescale(self.pairs_requested)
        return self

    def _coord_shape(self, m, ctx):
        return (self.width(m),)

    def elements(self, xi, ctx):
        return {m: torch.exp(t) for t, m in zip(xi, self.pairs)}  # d = exp(t) per pair

    def hidden_after(self, d, m, ctx):
        return d * ctx.trace.preacts[m], d * ctx.trace.inputs[m + 1]  # sigma(d z) = d sigma(z) for d > 0

    def weight_vjp(self, l, delta, params, elements, hidden, ctx):
        """W'_l = diag(d_l) W_l diag(1/d_{l-1}), each factor only where its pair acts."""
        u = (delta * elements[l] if l in elements else delta) @ params[self.problem.layers[l][0]]
        return u / elements[l - 1] if l - 1 in elements else u

    def _factors(self, xi, params) -> list[Tensor | None]:
        return rescale_factors(params, [(t, *self.problem.layers[m], self.problem.layers[m + 1][0], 1)
                                        for t, m in zip(xi, self.pairs)])


def rescale_factors(params, sites) -> list[Tensor | None]:
    """Elementwise factor F with w' = F * w for each parameter (None: left alone) under positive rescaling.

    ``sites``: (t, producer weight index, its bias index or None, consumer weight index, repeat) per site: the
    producer's output unit (a row, or a convolution's output channel) k scales by exp(t_k), the consumer's inputs
    of unit k (``repeat`` consecutive columns of a Linear, or input channel k of a convolution) by exp(-t_k)."""
    factors = [None] * len(params)

    def scale(i, by):
        factors[i] = by if factors[i] is None else factors[i] * by

    for t, w0, b0, w1, repeat in sites:
        d, inverse = torch.exp(t), torch.exp(-t)
        scale(w0, d.reshape(-1, *[1] * (params[w0].ndim - 1)))
        if b0 is not None:
            scale(b0, d)
        inverse = inverse.repeat_interleave(repeat) if repeat > 1 else inverse
        scale(w1, inverse.reshape(1, -1, *[1] * (params[w1].ndim - 2)))
    return factors
