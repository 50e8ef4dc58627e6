"""Flattening a nested config into dotted keys (shared by checkpoint fingerprints and run reports)."""
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
