"""Teleport solvers and the guard that keeps every teleport on the level set."""
from .base import NoTeleport, TeleportSolver, loss_and_grad_norm_sq
from .solvers import GradientAscent, RandomSearch, ResetOnly

__all__ = ["TeleportSolver", "NoTeleport", "GradientAscent", "RandomSearch", "ResetOnly",
           "loss_and_grad_norm_sq"]
