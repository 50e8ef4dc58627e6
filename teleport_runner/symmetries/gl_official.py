"""The official 2022 code's GL(d) move on an MLP (``gl_data`` with ``form: official``), reproduced for its numbers.

It is not a group action: it is one ascent step of the official teleport, meant to be re-based on the current
weights after every step (``teleport.compound=true``). For the pairs m = 0, 1, ... in order (g_m = I + T_m, h_m the
input of layer m with a ones column when there are biases, s = sigma(W_m h_m)):

    W_{m+1} <- W_{m+1} (I - T_m)                       (first order in T_m, for W_{m+1} g_m^-1)
    W_m     <- sigma^-1(g_m sigma(W_m h_m)) h_m^+      (W_m as already multiplied by (I - T_{m-1}); eq. 8 literally)

Two passes differ in where h_m comes from (facts read from the official code, Rose-STL-Lab/Symmetry-Teleportation,
``teleportation.py``):
  - the objective pass, whose ||grad L||^2 is differentiated at T = 0: h_{m+1} = sigma(W_m' h_m) is recomputed from
    the weights it has just transformed, and h^+ too (a pseudo-inverse differentiable in T);
  - the update pass, which writes the weights: h_m are the activations of the weights before the step.
Neither keeps the loss: W (I - T) is not W (I + T)^-1, and in the update pass layer m+1 gets h_{m+1}^+ of the old
activations while its input becomes g_m h_{m+1}. So the loss moves at every step (39-98% over one official regression
teleport); the teleport guard must be opened for it (``teleport.max_rel_drift=inf``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Coords


def _with_ones(h: Tensor, bias: bool) -> Tensor:
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=1) if bias else h


def official_pass(symmetry, xi: Coords, params: list[Tensor], ctx, objective: bool) -> list[Tensor]:
    """The weights after the official move with coordinates ``xi`` (one T per pair of ``symmetry.pairs``):
    the objective pass (``objective=True``, differentiable in xi through the recomputed activations and their
    pseudo-inverses) or the update pass (the activations and h^+ of ``ctx``, the point the move starts from)."""
    p = symmetry.problem
    T_of = dict(zip(symmetry.pairs, xi))
    out = list(params)
    h = ctx.trace.inputs[0]
    for m in range(p.n_layers - 1):  # every hidden layer, first to last, as the official loop
        (w0, b0), (w1, _) = p.layers[m], p.layers[m + 1]
        if m in T_of:
            T = T_of[m]
            out[w1] = out[w1] - out[w1] @ T  # W_{m+1} (I - T)
            h_aug = _with_ones(h, p.bias)
            w_aug = torch.cat([out[w0], out[b0][:, None]], 1) if b0 is not None else out[w0]
            s = symmetry.sigma_of(m)(h_aug @ w_aug.T)  # (batch, d)
            z_new = symmetry.sigma_inv_of(m)(s + s @ T.T)  # the pre-activations of g sigma(z), torch layout
            h_pinv = torch.linalg.pinv(h_aug) if objective else ctx.pairs[m].h_pinv  # (in(+1), batch)
            w_aug = (h_pinv @ z_new).T
            out[w0] = w_aug[:, :p.sizes[m]]
            if b0 is not None:
                out[b0] = w_aug[:, p.sizes[m]]
        if objective:  # the next pair's input, from the weights just transformed
            h = symmetry.sigma_of(m)(torch.nn.functional.linear(h, out[w0], None if b0 is None else out[b0]))
        else:  # the activations of the weights before the step
            h = ctx.trace.inputs[m + 1]
    return out
