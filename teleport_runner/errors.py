"""User-facing errors: each carries a one-paragraph message that names the bad value and what is valid.

The CLI prints these without a traceback (set HYDRA_FULL_ERROR=1 to see one) and exits non-zero.
"""


class UserError(Exception):
    """A mistake the user can fix: bad config value, missing data, a symmetry that does not fit."""


class ConfigError(UserError):
    """A configuration value is invalid or inconsistent with another one."""


class DataError(UserError):
    """Data files are missing, truncated or corrupted."""


class SymmetryMismatch(ConfigError):
    """The chosen symmetry does not leave the chosen problem's loss invariant."""


def one_of(name: str, value, valid) -> ConfigError:
    """The standard 'bad value, here is what is valid' error."""
    return ConfigError(f"Invalid {name}: {value!r}. Valid values: {', '.join(map(str, valid))}.")
