"""Level-set teleportation by normalized sequential linear programming (Mishkin, Bietti, Gower, arXiv 2403.03362).

It maximizes phi(w) = 1/2 log ||grad L(w)||^2 subject to L(w) = L0 = L(w_0) (``sublevel``: L(w) <= L0) over the
parameters themselves. No group is involved, so every differentiable problem fits and the symmetry is ignored.

One iteration at w, with g = grad L(w), q = H g (one Hessian-vector product: a double backward) and c = L(w) - L0:

    s = q / ||g||^2                       the gradient of phi
    lam = g.s / ||g||^2                   the constraint's multiplier estimate (s = lam g at a KKT point)
    d = rho s - v g,  v = (rho g.s + c) / ||g||^2    so the linearized constraint c + g.d = 0 holds
                                          (sublevel: v >= 0, the step may stay inside the half-space)
    merit M = phi - gamma pen(c), pen = |.| (sublevel: max(., 0)), gamma = max(gamma, 2 |lam|), so that the linear
    model's gain P = s.d + gamma (pen(c) - pen(c + g.d)) >= rho ||s - lam g||^2 + |lam| pen(c) is positive.

Armijo backtracking: accept w + d when M(w + d) >= M(w) + ARMIJO P, else halve rho and try again (at most
``max_backtracks`` trials; each trial point first takes one Newton step back onto the level set along its own
gradient, a second-order correction that lets steps follow the level set's curvature); rho doubles after a first trial whose gain reached GROW_RATIO P (the linear model was
good). The search stops when the relative KKT gap ||s - lam g||^2 / ||s||^2 (the squared sine of the angle between
grad phi and g: scale-free, unlike the unnormalized gap, which changes with the weights' scale) and the relative
violation pen(c) / |L0| are both <= ``tol``; when every backtrack fails (rho left shrunk) or rho < MIN_RHO; or after
``steps`` iterations. Then a correction back onto the level set: Newton steps on the scalar constraint along g,
w -= c g / ||g||^2, until pen(c) / |L0| <= CORRECTION_SHARE x the guard's drift tolerance, so an accepted slp teleport
meets the same ``max_rel_drift`` as a group teleport (1e-10 in float64, 1e-5 in float32).

Host syncs: one per line-search trial (whether it is accepted decides the next point; the first trial of an iteration
also carries that iteration's stop test, so the test costs no read of its own) and one per correction step (whether
the level set is reached). gamma, the step and the merit stay on the device.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..errors import ConfigError
from ..problems.base import Batch, Problem
from .base import Proposal, TeleportSolver

ARMIJO = 1e-4            # sufficient fraction of the linear model's merit gain
GROW_RATIO = 0.75        # rho doubles when the first trial gains at least this share of the model's gain
MAX_VIOLATION = 0.1      # a trial leaving the level set by more (relative to |L0|) is refused, unless it reduces the
                         # violation: far off the level set the merit's trade-off is no longer worth trusting
MIN_RHO = 1e-16          # below this the search stops: no step the line search accepts is left
CORRECTION_STEPS = 8     # Newton steps back onto the level set, at most
CORRECTION_SHARE = 0.1   # ... until the violation is this share of the guard's drift tolerance


def flat_loss(problem: Problem, batch: Batch, shapes: list[torch.Size]) -> Callable[[Tensor], Tensor]:
    """L as a function of one flat vector holding every parameter (views into it, so autograd reaches it)."""
    sizes = [math.prod(s) for s in shapes]
    return lambda x: problem.loss([t.view(s) for t, s in zip(torch.split(x, sizes), shapes)], batch)


def loss_and_grad(loss: Callable[[Tensor], Tensor], x: Tensor, graph: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """(the leaf x, L(x) detached, grad L(x)); with ``graph`` the gradient keeps its graph for ``hvp``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value = loss(x)
        (grad,) = torch.autograd.grad(value, x, create_graph=graph)
    return x, value.detach(), grad


def hvp(x: Tensor, grad: Tensor, v: Tensor) -> Tensor:
    """H v at x by differentiating ``grad`` (built with ``graph=True``) once more; zero for a loss linear in x."""
    if not grad.requires_grad:
        return torch.zeros_like(v)
    (hv,) = torch.autograd.grad(grad, x, grad_outputs=v, retain_graph=True)
    return hv


def slp_step(s: Tensor, g: Tensor, c: Tensor, rho: float, sublevel: bool) -> Tensor:
    """d = rho s - v g with v such that c + g.d = 0 (sublevel: v >= 0)."""
    gg = g @ g
    v = (rho * (g @ s) + c) / gg
    if sublevel:
        v = v.clamp_min(0)
    return rho * s - v * g


class LevelSetSLP(TeleportSolver):
    """Level-set teleportation: maximize ||grad L||^2 on the loss level set by normalized SLP (module docstring).

    Args:
        steps: SLP iterations at most (one Hessian-vector product each).
        rho: the first step scale (adapted by the line search).
        tol: stop when the relative KKT gap and the relative constraint violation are both below this.
        max_backtracks: line-search trials per iteration.
        sublevel: constrain L(w) <= L0 instead of L(w) = L0 (the guard then accepts a lower loss).
        **guard: ``max_rel_drift``, ``optimizer_state`` (keep or reset: without a group there is nothing to
            transform the state with), ``batches``, ``batch_size`` (the teleport batch: the whole training set for
            full-batch problems).
    """

    needs_group = False

    def __init__(self, steps: int = 50, rho: float = 0.1, tol: float = 1e-6, max_backtracks: int = 25,
                 sublevel: bool = False, **guard):
        super().__init__(**guard)
        if not self.objective.fast:
            raise ConfigError(f"Invalid teleport.objective={self.objective.name} (direction "
                              f"{self.objective.direction}) with teleport=slp: level-set SLP only maximizes "
                              "||grad L||^2 (objective grad_norm, direction max). For sharpness, curvature or min, "
                              "use teleport=gradient_ascent or random_search with a symmetry.")
        if int(steps) < 1:
            raise ConfigError(f"Invalid teleport.steps: {steps!r}; the number of SLP iterations must be a positive "
                              "integer.")
        if not rho > 0 or not math.isfinite(rho):
            raise ConfigError(f"Invalid teleport.rho: {rho!r}; the first SLP step scale must be a finite number > 0.")
        if not tol >= 0:
            raise ConfigError(f"Invalid teleport.tol: {tol!r}; the stopping tolerance must be >= 0 (0: run all "
                              "steps).")
        if int(max_backtracks) < 1:
            raise ConfigError(f"Invalid teleport.max_backtracks: {max_backtracks!r}; it must be a positive integer "
                              "(line-search trials per SLP iteration).")
        if not isinstance(sublevel, bool):
            raise ConfigError(f"Invalid teleport.sublevel: {sublevel!r}; it must be true or false.")
        if self.optimizer_state == "transform":
            raise ConfigError("Invalid teleport.optimizer_state: 'transform' with teleport=slp. Level-set "
                              "teleportation moves the parameters without a group action, so there is nothing to "
                              "carry optimizer state with. Valid values here: keep, reset.")
        self.steps, self.rho, self.tol = int(steps), float(rho), float(tol)
        self.max_backtracks, self.sublevel = int(max_backtracks), sublevel

    def measures_holdout(self, symmetry) -> bool:
        return True  # the move is exact on the teleport batch only: always measure the change off it

    def drift(self, before: Tensor, after: Tensor) -> Tensor:
        if not self.sublevel:
            return super().drift(before, after)
        return super().drift(before, torch.maximum(before, after))  # sublevel: only a rise counts

    def penalty(self, c: Tensor) -> Tensor:
        return c.clamp_min(0) if self.sublevel else c.abs()

    def propose(self, problem, symmetry, params, batch, generator) -> Proposal:
        loss = flat_loss(problem, batch, [p.shape for p in params])
        x, f0, g = loss_and_grad(loss, torch.cat([p.reshape(-1) for p in params]))
        scale = f0.abs().clamp_min(torch.finfo(f0.dtype).tiny)
        x, f, info = self._search(loss, x, f0, g, scale)
        x, info["slp_corrections"] = self._correct(loss, x, f0, scale)
        sizes = [p.numel() for p in params]
        return Proposal([t.view(p.shape).clone() for t, p in zip(torch.split(x.detach(), sizes), params)],
                        info=info)

    def _search(self, loss, x: Tensor, f0: Tensor, g: Tensor, scale: Tensor) -> tuple[Tensor, Tensor, dict]:
        """SLP iterations from (x, f0, g); returns the last accepted point, its loss and diagnostics."""
        f, rho, gamma = f0, self.rho, f0.new_zeros(())
        iterations, trials, end, gap_value = 0, 0, "steps", math.nan
        for _ in range(self.steps):
            self.check_stop()
            gd = g.detach()
            gg = gd @ gd
            s = hvp(x, g, gd) / gg
            lam = (gd @ s) / gg
            c = f - f0
            gap = (s - lam * gd).square().sum() / (s @ s).clamp_min(torch.finfo(s.dtype).tiny)
            converged = (gap <= self.tol) & (self.penalty(c) / scale <= self.tol)
            gamma = torch.maximum(gamma, 2 * lam.abs())
            merit = 0.5 * torch.log(gg) - gamma * self.penalty(c)
            usable = torch.isfinite(merit) & torch.isfinite(s).all() & (gg > 0)
            iterations += 1
            for k in range(self.max_backtracks):
                d = slp_step(s, gd, c, rho, self.sublevel)
                model_gain = s @ d + gamma * (self.penalty(c) - self.penalty(c + gd @ d))
                xt, ft, gt = self._trial(loss, x.detach() + d, f0)
                ggt = gt.detach() @ gt.detach()
                gain = 0.5 * torch.log(ggt) - gamma * self.penalty(ft - f0) - merit
                violation = self.penalty(ft - f0) / scale
                ok = (torch.isfinite(gain) & torch.isfinite(ft) & (gain >= ARMIJO * model_gain)
                      & (violation <= torch.clamp(self.penalty(c) / scale, min=MAX_VIOLATION)))
                # The one host read of this trial: its verdict, and (first trial) the iteration's stop test.
                flags = [ok, gain >= GROW_RATIO * model_gain, converged, usable, gap]
                ok, grow, done, fine, gap_value = torch.stack([t.to(gap.dtype) for t in flags]).tolist()
                trials += 1
                if k == 0 and (done or not fine):
                    end = "converged" if done else "stationary"
                    break
                if ok:
                    x, f, g = xt, ft, gt
                    rho = rho * 2 if k == 0 and grow else rho
                    break
                rho *= 0.5
            else:
                end = "line search"
            if end == "steps" and rho < MIN_RHO:
                end = "rho"
            if end != "steps":
                break
        return x, f, {"slp_iterations": iterations, "slp_trials": trials, "slp_end": end, "slp_kkt_gap": gap_value,
                      "slp_rho": rho}

    def _trial(self, loss, x: Tensor, f0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The trial point w + d after one Newton step back onto the level set along its gradient (a second-order
        correction: the linearized constraint misses the level set's curvature by O(|d|^2), the corrected point by
        far less), with its loss and gradient (kept with its graph for the next iteration's HVP)."""
        _, f, g = loss_and_grad(loss, x, graph=False)
        c = f - f0
        c = c.clamp_min(0) if self.sublevel else c
        return loss_and_grad(loss, x - (c / (g @ g)) * g)

    def _correct(self, loss, x: Tensor, f0: Tensor, scale: Tensor) -> tuple[Tensor, int]:
        """Newton steps on c(w) = L(w) - L0 along g until the relative violation is below the target."""
        target = CORRECTION_SHARE * self.tolerance(f0.dtype)
        x = x.detach()
        for step in range(CORRECTION_STEPS):
            _, f, g = loss_and_grad(loss, x, graph=False)
            c = f - f0
            if float(self.penalty(c) / scale) <= target:  # one host read per correction step
                return x, step
            x = x - (c / (g @ g)) * g
        return x, CORRECTION_STEPS
