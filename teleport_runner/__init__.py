"""teleport_runner: a Hydra experiment runner for symmetry teleportation (Zhao et al., NeurIPS 2022).

``from teleport_runner import Teleporter`` (``api.py``) is imported on first use, so that importing the package
(the CLI's ``--help``) does not import torch.
"""

__version__ = "0.1.0"
__all__ = ["Teleporter"]


def __getattr__(name: str):
    if name == "Teleporter":
        from .api import Teleporter

        return Teleporter
    raise AttributeError(f"module 'teleport_runner' has no attribute {name!r}")
