"""teleport_runner: a Hydra experiment runner for symmetry teleportation (Zhao et al., NeurIPS 2022)."""

__version__ = "0.1.0"
