"""``python -m teleport_runner ...`` is ``teleport-train ...``."""
from .train import main

if __name__ == "__main__":
    main()
