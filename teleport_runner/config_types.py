"""Type checks of a config group's values against its constructor's defaults, before anything is built.

Every built object's settings come from a Python signature (problems, symmetries, solvers, schedules, loggers,
``torch.optim`` optimizers). Where a setting's default is a number, a bool or a list of numbers, the value given
must be one too: ``optimizer.lr=abc`` is refused as "Invalid optimizer.lr: 'abc'; it must be a number." rather
than by whatever a constructor's ``int()`` or comparison raises three calls later. Settings whose default is
``None`` or a string are left to the constructor's own checks (they name the valid values).
"""
from __future__ import annotations

import inspect
from numbers import Real

from .errors import ConfigError


def _kind(param: inspect.Parameter) -> str | None:
    """What a setting takes, from its annotation where it names one (``int``, ``float``, ``bool``), else from its
    default (an int default such as ``momentum: float = 0`` takes any number)."""
    annotation = param.annotation if isinstance(param.annotation, str) else str(param.annotation)
    default = param.default
    if "str" in annotation or "Tensor" in annotation and "float" not in annotation:
        return None
    if isinstance(default, bool) or default is None and annotation.strip() in ("bool", "bool | None"):
        return "bool"
    numeric = "int" if "int" in annotation and "float" not in annotation else "float"
    if isinstance(default, (int, float)):
        return numeric
    if default is None and ("int" in annotation or "float" in annotation) and "Sequence" not in annotation:
        return numeric
    if isinstance(default, (list, tuple)) and default and all(_is_number(v) for v in default):
        return "ints" if all(isinstance(v, int) for v in default) and "float" not in annotation else "floats"
    return None


def _is_int(value) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            or isinstance(value, float) and value.is_integer())


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _fits(kind: str, value) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return _is_int(value)
    if kind == "float":
        return _is_number(value)
    if not isinstance(value, (list, tuple)) or type(value).__name__ == "str":
        return False
    return all(_is_int(v) if kind == "ints" else _is_number(v) for v in value)


WANTED = {"bool": "true or false", "int": "an integer", "float": "a number",
          "ints": "a list of integers, e.g. [512,512]", "floats": "a list of numbers, e.g. [0.9,0.999]"}


def check_types(node: dict, group: str) -> None:
    """Raise ``ConfigError`` naming ``<group>.<key>`` for a value whose type cannot be what the target takes."""
    target = node.get("_target_")
    if not isinstance(target, str):
        return
    try:
        from hydra.utils import get_object

        obj = get_object(target)
        signatures = [inspect.signature(obj)]
        if inspect.isclass(obj):  # settings a subclass passes on through **kwargs are typed by a base class
            signatures += [inspect.signature(base.__init__) for base in obj.__mro__[1:] if "__init__" in vars(base)]
    except Exception:  # an unknown target is reported by instantiate itself
        return
    params = {}
    for signature in signatures:
        for key, param in signature.parameters.items():
            params.setdefault(key, param)
    for key, param in params.items():
        if key not in node or param.default is inspect.Parameter.empty:
            continue
        kind, value = _kind(param), node[key]
        if kind is None or value is None and param.default is None:
            continue
        if not _fits(kind, value):
            raise ConfigError(f"Invalid {group}.{key}: {value!r}; it must be {WANTED[kind]}.")
