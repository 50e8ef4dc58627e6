"""Symmetries: group actions that leave a problem's loss invariant (see ``base.Symmetry``)."""
from .base import Coords, Symmetry
from .level_set import LevelSetRotation

__all__ = ["Coords", "Symmetry", "LevelSetRotation"]
