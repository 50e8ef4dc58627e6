"""GL(d) on the fully-connected pairs of any module (``problem=module``, ``Teleporter``): ``gl_linear``, ``gl_data``
and ``gl_hidden``, acted by the MLP symmetries themselves.

``ModuleLayers`` shows the Linear -> Linear pairs that ``discovery.py`` finds to those symmetries as the layer
structure they act on: each paired Linear is a layer of a virtual MLP (pair m = its layers m and m+1), ``layers``
holds the indices of its weight and bias in the module's own parameter list, ``sizes`` its widths, and ``trace``
records each layer's input and pre-activation on a batch with forward hooks. ``GLLinear.act``, ``GLData.act`` and
``GLHidden.act`` then run unchanged. Which pairs each takes: gl_linear a pair with no activation between the two
layers (dropout and identity pass; data-free, exact on every input, and the guard checks held-out data too);
gl_data and gl_hidden a pair with none or one bijective activation (LeakyReLU with slope > 0), exact on the teleport
batch only. ReLU pairs are refused for them (``symmetry=rescale`` acts there), convolution pairs keep rescale.
The ascent objective is the generic one, autograd through the module's loss: the closed form
(``batch_objective.py``) backpropagates through an MLP from its input to its output, which a module need not be.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from ..errors import ConfigError, SymmetryMismatch
from ..problems.mlp import activation_fn
from .base import Symmetry
from .batch_objective import BatchContext, NetworkTrace
from .data_free import GLLinear
from .discovery import Site, discover
from .gl_data import GLData, GLHidden
from .layer_pairs import inverse_activation


class ModuleLayers:
    """The paired Linear layers of a module as the network the MLP symmetries act on (``mlp.NetworkProblem``'s
    ``layers``, ``sizes``, ``bias``, ``activation``, ``trace``), its loss the module's own."""

    is_network, is_module = True, False

    def __init__(self, problem, names: list[str], activations: dict[int, tuple[str, float]]):
        modules = dict(problem.model.named_modules())
        index = {name: i for i, name in enumerate(problem.names)}
        self.base, self.names, self.name = problem, names, problem.name
        self.modules = [modules[name] for name in names]
        self.layers = [(index[f"{name}.weight"], index.get(f"{name}.bias")) for name in names]
        self.sizes = [m.in_features for m in self.modules] + [self.modules[-1].out_features]
        self.bias = all(self.layers[m][1] is not None for m in activations)  # the pairs' first layers
        self.activations = activations  # {pair m: (activation, slope)} of hidden layer m
        self.activation, self.slope = next(iter(activations.values()))  # what the MLP symmetries' checks read
        self.act = activation_fn(self.activation, self.slope)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def loss(self, params, batch) -> Tensor:
        return self.base.loss(params, batch)

    def trace(self, params, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Each paired layer's input (batch, in) and output z (batch, out) on ``x``, from one forward of the module
        (copies: an in-place activation after a layer would otherwise overwrite its z)."""
        records = {}

        def hook(i):
            return lambda module, inputs, out: records.__setitem__(i, (inputs[0].clone(), out.clone()))

        handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(self.modules)]
        try:
            self.base.forward(params, x)
        finally:
            for handle in handles:
                handle.remove()
        return [records[i][0] for i in range(self.n_layers)], [records[i][1] for i in range(self.n_layers)]


def _label(site: Site) -> str:
    return " -> ".join([site.producer, *site.via, site.consumer])


class ModulePairs:
    """Mixin ahead of an MLP GL symmetry: binds it to a module's Linear -> Linear pairs through ``ModuleLayers``.

    ``symmetry.pairs`` indexes the module's fully-connected pairs as ``print_pairs=true`` lists them."""

    uses_closed_form = False

    @classmethod
    def of(cls, symmetry) -> "ModulePairs":
        """The module version of ``symmetry`` with all its settings (``Symmetry.for_problem``)."""
        new = cls.__new__(cls)
        new.__dict__.update(symmetry.__dict__)
        new.module_pairs = symmetry.pairs_requested
        return new

    def refusal(self, site: Site) -> str | None:
        """Why this symmetry cannot act on a fully-connected pair (None: it can)."""
        acts = site.activations
        if len(acts) > 1:
            return f"{_label(site)} has {len(acts)} activations between the layers; {self.name} takes at most one"
        if acts and not (acts[0][0] == "leaky_relu" and acts[0][1] > 0):
            return (f"{_label(site)}: {acts[0][0]} (slope {acts[0][1]:g}) is not a bijection of R, which "
                    f"{self.name} needs (LeakyReLU with slope > 0, or no activation); symmetry=rescale acts there")
        return None

    def bind(self, problem) -> None:
        if not getattr(problem, "is_module", False):
            raise SymmetryMismatch(f"{type(self).__name__} acts on problem=module (an nn.Module); got "
                                   f"{problem.name!r}.")
        sites, skipped = discover(problem.model, problem.example_input())
        modules = dict(problem.model.named_modules())
        self.found = [s for s in sites if isinstance(modules[s.producer], nn.Linear)
                      and isinstance(modules[s.consumer], nn.Linear)]
        self.skipped = skipped + [f"{s.producer}: a convolution pair (symmetry=rescale acts on it)"
                                  for s in sites if s not in self.found]
        self.why = [self.refusal(s) for s in self.found]
        model = type(problem.model).__name__
        if self.module_pairs is None:
            chosen = [i for i, why in enumerate(self.why) if why is None]
            if not chosen:
                reasons = [w for w in self.why if w] + self.skipped or ["it has fewer than two Linear layers"]
                raise SymmetryMismatch(
                    f"Symmetry {self.name!r} found no Linear -> Linear pair it can act on in {model}: "
                    f"{'; '.join(reasons)}. {self.wants} Use symmetry=rescale for ReLU and convolution pairs, or "
                    "teleport=none.")
            if any(self.why):
                warnings.warn(f"Symmetry {self.name!r} on {model} skips: {'; '.join(w for w in self.why if w)}.",
                              stacklevel=2)
        else:
            pairs = list(self.module_pairs)
            if any(not isinstance(p, int) or not 0 <= p < len(self.found) for p in pairs):
                raise ConfigError(f"Invalid symmetry.pairs: {pairs!r}; {model} has {len(self.found)} Linear -> "
                                  f"Linear pairs, so use null or distinct indices in 0..{len(self.found) - 1} "
                                  "(print_pairs=true lists them).")
            refused = [self.why[p] for p in pairs if self.why[p]]
            if refused:
                raise SymmetryMismatch(f"Symmetry {self.name!r} cannot act on the chosen pairs of {model}: "
                                       f"{'; '.join(refused)}. {self.wants}")
            chosen = sorted(pairs)
        names, virtual, acts = [], [], {}
        for i in chosen:
            site = self.found[i]
            if not names or names[-1] != site.producer:
                names.append(site.producer)
            virtual.append(len(names) - 1)
            kind = site.activations[0] if site.activations else ("identity", 0.0)
            acts[len(names) - 1] = kind
            names.append(site.consumer)
        self.chosen = chosen
        view = ModuleLayers(problem, names, acts)
        self.check_view(view, model)
        self.pairs_requested = virtual  # what LayerPairSymmetry.bind selects: pair m of the view
        try:
            super().bind(view)
        finally:
            self.pairs_requested = self.module_pairs

    wants = ""

    def check_view(self, view: ModuleLayers, model: str) -> None:
        """Refuse what the action cannot do on these pairs."""

    def describe(self) -> list[str]:
        """Every Linear -> Linear pair (its index for ``symmetry.pairs``), then the skipped layers."""
        lines = []
        for i, (site, why) in enumerate(zip(self.found, self.why)):
            status = "" if i in self.chosen else f" (not for {self.name}: {why})" if why else " (not selected)"
            lines.append(f"pair {i}: {site.describe()}{status}")
        return lines + [f"skipped {line}" for line in self.skipped]

    def sigma_of(self, m: int):
        return activation_fn(*self.problem.activations[m])

    def sigma_inv_of(self, m: int):
        return inverse_activation(*self.problem.activations[m])

    def prepare(self, params, batch) -> BatchContext:
        """The paired layers' inputs and pre-activations on the batch (and gl_data's, gl_hidden's pair data)."""
        self.check_batch(batch[0].shape[0])
        with torch.no_grad():
            inputs, preacts = self.problem.trace([p.detach() for p in params], batch[0])
        ctx = BatchContext(NetworkTrace(inputs, preacts, [], 0, params[0].new_zeros(())))
        if self.data_dependent:  # hidden layer m: z = preacts[m], sigma(z) = the next layer's input
            ctx.pairs = {m: self.pair_data(inputs[m], preacts[m], inputs[m + 1]) for m in self.pairs}
        return ctx

    def grad_norm_sq(self, xi, params, batch, ctx, create_graph: bool = True):
        return Symmetry.grad_norm_sq(self, xi, params, batch, ctx, create_graph)


class ModuleGLLinear(ModulePairs, GLLinear):
    """``GLLinear`` on a module's Linear -> Linear pairs with no activation between them (data-free: exact on every
    input; the guard also checks held-out data)."""

    verify_off_batch = True
    wants = "gl_linear acts on a Linear followed by a Linear with no activation between them."

    def refusal(self, site):
        if site.activations:
            return (f"{_label(site)} has an activation ({site.activations[0][0]}), and gl_linear needs none "
                    "(gl_data or gl_hidden act through LeakyReLU)")
        return None


class ModuleGLData(ModulePairs, GLData):
    """``GLData`` (paper eq. 8) on a module's Linear -> [LeakyReLU] -> Linear pairs: exact on the teleport batch."""

    wants = "gl_data acts on a Linear followed by a Linear through LeakyReLU (slope > 0) or no activation."

    def check_view(self, view, model):
        firsts = [view.names[m] for m in view.activations]
        with_bias = [name for m, name in zip(view.activations, firsts) if view.layers[m][1] is not None]
        if with_bias and len(with_bias) < len(firsts):
            without = [name for name in firsts if name not in with_bias]
            raise SymmetryMismatch(
                f"Symmetry 'gl_data' on {model} needs the first layers of its pairs all with a bias or all without; "
                f"with a bias: {', '.join(with_bias)}; without: {', '.join(without)}. Choose pairs that agree with "
                "symmetry.pairs, or use symmetry=gl_hidden.")


class ModuleGLHidden(ModulePairs, GLHidden):
    """``GLHidden`` (the follow-up's form) on a module's Linear -> [LeakyReLU] -> Linear pairs: exact on the batch."""

    wants = "gl_hidden acts on a Linear followed by a Linear through LeakyReLU (slope > 0) or no activation."


MODULE_VERSIONS = {GLLinear: ModuleGLLinear, GLData: ModuleGLData, GLHidden: ModuleGLHidden}


def module_version(symmetry):
    """The module version of an MLP GL symmetry (itself if it has none: its ``bind`` refuses a module)."""
    cls = MODULE_VERSIONS.get(type(symmetry))
    return symmetry if cls is None else cls.of(symmetry)
