"""Teleport solvers and the guard that keeps every teleport on the level set."""
from .base import NoTeleport, Proposal, TeleportSolver, loss_and_grad_norm_sq
from .slp import LevelSetSLP
from .solvers import GradientAscent, RandomSearch, ResetOnly

__all__ = ["TeleportSolver", "Proposal", "NoTeleport", "GradientAscent", "RandomSearch", "ResetOnly", "LevelSetSLP",
           "loss_and_grad_norm_sq"]
