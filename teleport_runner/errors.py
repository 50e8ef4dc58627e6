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


class RecordWriteError(Exception):
    """A run file could not be written (disk full, permissions, a folder removed under the run). Not a user
    mistake in the config, but reported the same way: one line naming the file and the cause."""


def describe_os_error(exc: OSError, path=None) -> str:
    """``<path>: no space left on device`` and the like, without Python's ``[Errno 28]`` internals."""
    import os

    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return f"{path or exc.filename or '?'}: {reason}"


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (library messages run to several), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
