"""Problems: a loss, its parameters and its data (see ``base.Problem``)."""
from .base import Batch, Problem
from .test_functions import Booth, LevelSetProblem, Quadratic, Rosenbrock

__all__ = ["Batch", "Problem", "LevelSetProblem", "Rosenbrock", "Booth", "Quadratic"]
