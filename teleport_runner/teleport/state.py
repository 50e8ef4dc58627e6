"""Optimizer-state policies across a teleport: keep, reset, or transform with the group action.

The follow-up paper re-creates the optimizer after each teleport; on Fashion-MNIST with AdaGrad most of its
gain came from that reset alone (measured with its code), so the policy is an explicit choice, never implicit.
"""
from __future__ import annotations

import torch

STATE_POLICIES = ("keep", "reset", "transform")


def apply_state_policy(policy: str, optimizer: torch.optim.Optimizer, symmetry, xi, old_params, ctx,
                       params) -> None:
    if policy == "keep":
        return
    if policy == "reset":
        optimizer.state.clear()
        return
    # transform: the symmetry maps each parameter's state tensors (momentum, squared averages, ...)
    new_states = symmetry.transform_state(xi, old_params, ctx,
                                          [optimizer.state.get(p, {}) for p in params])
    for p, s in zip(params, new_states):
        if s:
            optimizer.state[p] = s
