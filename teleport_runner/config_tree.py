"""Nested configs as plain trees: flattening into dotted keys (checkpoint fingerprints, run reports) and reading
the YAML files Hydra wrote."""
from __future__ import annotations

import json


def flatten(tree, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become JSON strings so every value is hashable and comparable."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.dumps(tree) if isinstance(tree, list) else tree}


def read_yaml(path):
    """A YAML file Hydra wrote (``.hydra/*.yaml``), as plain dicts and lists, as
    ``OmegaConf.to_container(OmegaConf.load(path))`` reads it (OmegaConf's scalar rules: ``1e-3`` is a float),
    parsed by libyaml where PyYAML has it: ~30x faster, which matters to a report over many runs."""
    import yaml

    global _LOADER
    if _LOADER is None:
        from omegaconf._utils import get_yaml_loader

        class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            yaml_implicit_resolvers = get_yaml_loader().yaml_implicit_resolvers

        _LOADER = Loader
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_LOADER)


_LOADER = None


def select(tree, dotted: str, default=None):
    """``tree["a"]["b"]`` for ``"a.b"``, or ``default`` where a level is missing."""
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return default
        tree = tree[key]
    return tree
