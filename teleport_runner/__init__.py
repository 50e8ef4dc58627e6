"""teleport_runner: a Hydra experiment runner for symmetry teleportation (Zhao et al., NeurIPS 2022).

``from teleport_runner import Teleporter`` (``api.py``) is imported on first use, so that importing the package
(the CLI's ``--help``) does not import torch.
"""
from pathlib import Path

__version__ = "0.1.0"
__all__ = ["Teleporter", "CONFIG_DIR", "version"]

#: The Hydra configs (config.yaml and one folder per group). They ship inside the package, so the same path
#: serves a checkout (editable install) and an installed wheel.
CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")


def version() -> str:
    """The installed distribution's version; ``__version__`` when the package runs from a plain checkout."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as distribution_version

    try:
        return distribution_version("teleport_runner")
    except PackageNotFoundError:
        return __version__


def __getattr__(name: str):
    if name == "Teleporter":
        from .api import Teleporter

        return Teleporter
    raise AttributeError(f"module 'teleport_runner' has no attribute {name!r}")
