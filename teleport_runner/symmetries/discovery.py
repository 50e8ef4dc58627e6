"""Where a module's layer-pair symmetries sit, found from its structure (a ``torch.fx`` trace, shapes from one
example batch).

A site is a producing layer (``nn.Linear`` or ``nn.Conv2d``) whose output reaches one consuming layer
(``nn.Linear`` or ``nn.Conv2d``) through positively homogeneous, per-unit operations only: ReLU and LeakyReLU
(modules or functions), max/average pooling (after a convolution), dropout and identity (the module runs in eval
mode), and a flatten or view from (N, C, H, W) to (N, C*H*W). Each output channel (or unit) of the producer then
maps to one input channel of a consuming convolution, or to the H*W consecutive columns of a consuming Linear.
Anything else on the way (BatchNorm, a residual addition, a second use of the output, another op) breaks the pair;
``discover`` names it. Positive rescaling is exact on such a site for every input (``conv_rescale.py``).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import symbolic_trace
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import first_line

LAYERS = (nn.Linear, nn.Conv2d)
ACTIVATION_MODULES = (nn.ReLU, nn.LeakyReLU)
ACTIVATION_FUNCTIONS = (F.relu, torch.relu, F.leaky_relu, torch.nn.functional.relu_)
POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
POOL_FUNCTIONS = (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d)
PASS_MODULES = (nn.Identity, nn.Dropout)
PASS_FUNCTIONS = (F.dropout,)
FLATTEN_METHODS = ("flatten", "view", "reshape")
ACTIVATION_METHODS = ("relu", "relu_")


@dataclass
class Site:
    """One teleportable pair: ``channels`` units of ``producer`` rescaled, undone in ``consumer``'s inputs (each
    unit owns ``repeat`` consecutive inputs of the consumer: H*W after a flatten, else 1)."""

    producer: str
    consumer: str
    channels: int
    repeat: int = 1
    via: list[str] = field(default_factory=list)
    #: the activations on the way, in order: ("relu", 0.0) or ("leaky_relu", negative slope)
    activations: list[tuple[str, float]] = field(default_factory=list)

    def describe(self) -> str:
        path = " -> ".join([self.producer, *self.via, self.consumer])
        per = f", {self.repeat} columns each" if self.repeat > 1 else ""
        return f"{path}: {self.channels} channels{per}"


def node_label(node, modules) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(modules[node.target]).__name__})"
    if node.op == "call_function":
        return {operator.add: "an addition (residual)", operator.iadd: "an addition (residual)"}.get(
            node.target, getattr(node.target, "__name__", str(node.target)))
    return f".{node.target}()" if node.op == "call_method" else str(node.target)


def _shape(node):
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def activation_of(node, modules) -> tuple[str, float] | None:
    """("relu", 0.0) or ("leaky_relu", slope) for an activation node, None for anything else."""
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, nn.LeakyReLU):
            return "leaky_relu", float(module.negative_slope)
        return ("relu", 0.0) if isinstance(module, nn.ReLU) else None
    if node.op == "call_function" and node.target is F.leaky_relu:
        slope = node.kwargs.get("negative_slope", node.args[1] if len(node.args) > 1 else 0.01)
        return "leaky_relu", float(slope)
    if node.op == "call_function" and node.target in ACTIVATION_FUNCTIONS or (
            node.op == "call_method" and node.target in ACTIVATION_METHODS):
        return "relu", 0.0
    return None


def _passes(node, modules, conv: bool) -> str | None:
    """How ``node`` passes a per-channel positive scale through ('' unchanged, 'flatten'), or None if it does not."""
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, ACTIVATION_MODULES + PASS_MODULES) or conv and isinstance(module, POOL_MODULES):
            return ""
        return "flatten" if isinstance(module, nn.Flatten) and module.start_dim == 1 else None
    if node.op == "call_function":
        if node.target in ACTIVATION_FUNCTIONS + PASS_FUNCTIONS or conv and node.target in POOL_FUNCTIONS:
            return ""
        return "flatten" if node.target is torch.flatten else None
    if node.op == "call_method":
        return "" if node.target in ACTIVATION_METHODS else "flatten" if node.target in FLATTEN_METHODS else None
    return None


def discover(model: nn.Module, example_input: torch.Tensor) -> tuple[list[Site], list[str]]:
    """(the sites in forward order, one line per layer whose pair is broken, naming what breaks it)."""
    try:
        traced = symbolic_trace(model)
    except Exception as exc:
        return [], [f"{type(model).__name__} could not be traced by torch.fx ({type(exc).__name__}: "
                    f"{first_line(exc)}); write its forward without data-dependent "
                    "control flow, or as an nn.Sequential"]
    with torch.no_grad():
        ShapeProp(traced).propagate(example_input)
    modules = dict(traced.named_modules())
    calls = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    shared = _shared_parameters(model)
    sites, skipped = [], []
    for node in traced.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], LAYERS):
            continue
        site, reason = _follow(node, modules, calls, shared)
        if site is not None:
            sites.append(site)
        elif reason:
            skipped.append(f"{node.target}: {reason}")
    return sites, skipped


def _shared_parameters(model: nn.Module) -> set[str]:
    """Modules holding a parameter that another module holds too (tied weights: a rescale would move both)."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for p in module._parameters.values():
            if p is not None:
                owners.setdefault(id(p), []).append(name)
    return {name for names in owners.values() if len(names) > 1 for name in names}


def _shape_query(node) -> bool:
    """``x.size(0)``, ``x.shape``, ``x.dim()``: they read the shape, not the values."""
    return (node.op == "call_method" and node.target in ("size", "dim")
            or node.op == "call_function" and node.target is getattr and node.args[1] in ("shape", "ndim"))


def _follow(node, modules, calls, shared) -> tuple[Site | None, str | None]:
    """The site starting at producer ``node``, or (None, why not); (None, None) for a last layer."""
    producer = modules[node.target]
    conv = isinstance(producer, nn.Conv2d)
    channels = producer.out_channels if conv else producer.out_features
    if calls[node.target] > 1 or node.target in shared:
        return None, "called more than once or shares its weights with another layer"
    cur, via, repeat, activations = node, [], 1, []
    while True:
        users = [u for u in cur.users if not _shape_query(u)]
        if len(users) != 1:
            return None, (f"its output is used by {len(users)} operations ("
                          f"{', '.join(node_label(u, modules) for u in users)}): a residual or a branch")
        nxt = users[0]
        if nxt.op == "output":
            return None, None
        if nxt.op == "call_module" and isinstance(modules[nxt.target], LAYERS):
            site, reason = _consumer(node.target, nxt, modules[nxt.target], channels, repeat, via, calls, shared, cur)
            if site is not None:
                site.activations = activations
            return site, reason
        how = _passes(nxt, modules, conv)
        if how is None or nxt.args[0] is not cur:
            return None, f"{node_label(nxt, modules)} before the next layer breaks the pair"
        if how == "flatten":
            before, after = _shape(cur), _shape(nxt)
            if before is None or after is None or len(after) != 2 or after[0] != before[0] or (
                    before[1] != channels or math.prod(before[1:]) != after[1]):
                return None, f"{node_label(nxt, modules)} reshapes {before} to {after}, not (N, C*H*W)"
            repeat = math.prod(before[2:])
        elif activation_of(nxt, modules) is not None:
            activations.append(activation_of(nxt, modules))
        via.append(node_label(nxt, modules))
        cur = nxt


def _consumer(producer, node, module, channels, repeat, via, calls, shared, cur):
    label = node_label(node, {node.target: module})
    if calls[node.target] > 1 or node.target in shared:
        return None, f"the next layer {label} is called more than once or shares its weights"
    shape = _shape(cur)
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or shape is None or len(shape) != 4 or module.in_channels != channels:
            return None, f"the next layer {label} is a grouped convolution or does not take its {channels} channels"
    elif shape is None or len(shape) != 2 or module.in_features != channels * repeat:
        return None, f"the next layer {label} does not take its {channels} channels as (N, C*H*W) inputs"
    return Site(producer, node.target, channels, repeat, via), None
