"""The teleport objective ||grad L(g·w)||^2 of a network, in closed form on the teleport batch.

The generic objective differentiates the loss at g·w and then differentiates that gradient's norm in g: a double
backward through the whole network and through every weight the action rewrites. For the network symmetries
(``gl_data``, ``gl_hidden``, ``gl_linear``, ``rescale``) much less is needed, because on the teleport batch their
effect is known: only the hidden layers m the action acts on change (to z'_m and sigma(z'_m)); every other
activation, and the output, stay as they were. So ||grad L(g·w)||^2 is one backpropagation with those hidden layers
swapped in, written out here, and its derivative in g is a single backward:

    delta_{L-1} = dl/dz_{L-1}                                   (unchanged: the output is unchanged)
    ||grad W'_l||^2 + ||grad b'_l||^2 = ||delta'_l^T [h'_l, 1]||^2
    delta'_{l-1} = (delta'_l W'_l) * sigma'(z'_{l-1})

The action only enters through h'_l, z'_{l-1} and the batch-sized product delta'_l W'_l, which it provides
(``ClosedFormObjective``); no weight matrix is rewritten. Layers above the highest changed hidden layer contribute
a constant, computed once per teleport. Each squared norm is taken from (batch x batch) Gram matrices when that is
cheaper than forming the (out x in) gradient ("ghost norms"). The value equals the generic objective whenever the
action is exact on the batch (tests compare both, and their gradients, in float64); the teleport guard still
measures the loss and gradient norm of the real parameters g·w afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor


@dataclass
class NetworkTrace:
    """The untransformed network on one teleport batch (built once per teleport).

    inputs[l] (batch, n_l) and preacts[l] (batch, n_{l+1}) of every layer l; ``top``: the layer just above the
    highest hidden layer the action changes; deltas[l] = dL/dz_l for l >= top (unchanged by the action; None
    below); ``constant``: the squared gradient norm of the layers above ``top``; ``grams``: [h_l, 1][h_l, 1]^T of
    inputs that never change, for the layers whose norm is cheaper from Gram matrices."""

    inputs: list[Tensor]
    preacts: list[Tensor]
    deltas: list[Tensor]
    top: int
    constant: Tensor
    grams: dict[int, Tensor] = field(default_factory=dict)


@dataclass
class BatchContext:
    """What ``prepare`` returns for a closed-form symmetry: the trace, and per-pair data if the action needs any
    (``gl_data.PairData``)."""

    trace: NetworkTrace
    pairs: dict = field(default_factory=dict)
    #: per pair, for ``exp`` ascent steps on dense coordinates (``gl_elements.TangentElement``, ``ProbedElement``):
    #: (T, its version, (I + T)^-1) of the current iterate, and the orthonormal basis of the step being taken
    inverses: dict = field(default_factory=dict)
    step_bases: dict = field(default_factory=dict)
    #: False when the teleport objective is differentiated by autograd through ``act`` (anything but ||grad L||^2
    #: maximized): the ``exp`` ascent then keeps dense coordinates (no ``FactoredElement``)
    factored: bool = True


def use_gram(batch: int, n_in: int, n_out: int) -> bool:
    """Gram matrices cost batch^2 (n_in + n_out), the explicit gradient batch n_in n_out."""
    return batch * (n_in + n_out) < n_in * n_out


def input_gram(h: Tensor, bias: bool) -> Tensor:
    """[h, 1][h, 1]^T (batch, batch): the bias is a column of ones in the layer's input."""
    gram = h @ h.T
    return gram + 1 if bias else gram


def layer_grad_sq(delta: Tensor, h: Tensor, bias: bool, gram: Tensor | None = None) -> Tensor:
    """||dL/dW||^2 + ||dL/db||^2 for a layer with input h (batch, n_in) and output gradient delta (batch, n_out),
    where dL/dW = delta^T h and dL/db = 1^T delta. From Gram matrices when that is cheaper, else directly."""
    if gram is None and use_gram(*h.shape, delta.shape[1]):
        gram = input_gram(h, bias)
    if gram is not None:
        return torch.sum((delta @ delta.T) * gram)
    value = (delta.T @ h).square().sum()
    return value + delta.sum(0).square().sum() if bias else value


def trace_network(problem, params: Sequence[Tensor], batch, changed: Sequence[int]) -> NetworkTrace:
    """Forward and backward of the untransformed network on ``batch``; ``changed``: the hidden layers the action
    acts on (hidden layer m is the output of layer m)."""
    with torch.no_grad():
        inputs, preacts = problem.trace(params, batch[0])
    out = preacts[-1].detach().requires_grad_(True)
    with torch.enable_grad():
        delta_out = torch.autograd.grad(problem.output_loss(out, batch), out)[0]
    n, top = problem.n_layers, max(changed) + 1
    deltas = [None] * n  # only those from `top` up: below it the action changes them
    deltas[-1] = delta_out
    with torch.no_grad():
        for l in range(n - 1, top, -1):
            deltas[l - 1] = problem.act_vjp(deltas[l] @ params[problem.layers[l][0]], preacts[l - 1])
        constant = sum((layer_grad_sq(deltas[l], inputs[l], problem.bias) for l in range(top + 1, n)),
                       torch.zeros((), device=delta_out.device, dtype=delta_out.dtype))
        grams = {l: input_gram(inputs[l], problem.bias) for l in range(top + 1)
                 if l - 1 not in changed and use_gram(*inputs[l].shape, preacts[l].shape[1])}
    return NetworkTrace(inputs, preacts, deltas, top, constant, grams)


def teleported_grad_norm_sq(problem, trace: NetworkTrace, hidden: dict[int, tuple[Tensor, Tensor]],
                            vjp: Callable[[int, Tensor], Tensor]) -> Tensor:
    """||grad L(g·w)||^2 on the trace's batch.

    hidden[m] = (z'_m, sigma(z'_m)) for each hidden layer m the action changes; vjp(l, delta) = delta W'_l, the
    product with layer l's weight after the action (batch, n_l). Differentiable in whatever those depend on."""
    total = trace.constant
    delta = trace.deltas[trace.top]
    for l in range(trace.top, -1, -1):
        if l - 1 in hidden:
            total = total + layer_grad_sq(delta, hidden[l - 1][1], problem.bias)
        else:
            total = total + layer_grad_sq(delta, trace.inputs[l], problem.bias, trace.grams.get(l))
        if l == 0:
            break
        z = hidden[l - 1][0] if l - 1 in hidden else trace.preacts[l - 1]
        delta = problem.act_vjp(vjp(l, delta), z)
    return total


class ClosedFormObjective:
    """Mixin for layer-pair symmetries whose effect on the teleport batch is known in closed form: ``prepare``
    traces the network once per teleport, ``elements(xi, ctx)`` gives {pair m: its group element}, and the symmetry
    implements ``hidden_after`` and ``weight_vjp``."""

    def prepare(self, params, batch) -> BatchContext:
        return BatchContext(trace_network(self.problem, [p.detach() for p in params], batch, self.pairs))

    def hidden_after(self, g, m: int, ctx: BatchContext) -> tuple[Tensor, Tensor]:
        """(z'_m, sigma(z'_m)) of hidden layer m on the batch after the action of g."""
        raise NotImplementedError

    def weight_vjp(self, l: int, delta: Tensor, params, elements: dict, hidden: dict, ctx: BatchContext) -> Tensor:
        """delta W'_l (batch, n_l): ``delta`` (batch, n_{l+1}) times layer l's weight after the action."""
        raise NotImplementedError

    uses_closed_form = True

    def grad_norm_sq(self, xi, params, batch, ctx, create_graph: bool = True) -> Tensor:
        """||grad L(g·w)||^2 on the teleport batch in closed form: one backward in xi instead of a double
        backward through the network, batch-sized products instead of rewritten weights."""
        return self.objective_at(self.elements(xi, ctx), params, ctx)

    def objective_at(self, elements: dict, params, ctx: BatchContext) -> Tensor:
        """The closed-form objective for given group elements {pair m: element}: anything with the products the
        symmetry uses (``rows``, ``right``, ``right_inv``), e.g. ``gl_elements.ProbedElement``."""
        hidden = {m: self.hidden_after(g, m, ctx) for m, g in elements.items()}
        return teleported_grad_norm_sq(self.problem, ctx.trace, hidden,
                                       lambda l, delta: self.weight_vjp(l, delta, params, elements, hidden, ctx))
