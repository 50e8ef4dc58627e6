"""Every tensor the runner creates is created on the parameters' device, checked without a GPU.

The bug this guards against only shows on CUDA: a tensor made without ``device=`` lands on the CPU while the
parameters live on the GPU, and the first op that mixes them fails (or a host copy slows every step). These tests
run real trainings (every symmetry, solver and optimizer-state path, a factored GL(512) teleport, a resume) under
a ``TorchFunctionMode`` that records every call of a tensor factory (``torch.eye``, ``zeros``, ``tensor``,
``rand``, ``randperm``, ...; the list ``torch.set_default_device`` itself uses) made from teleport_runner's own
code without an explicit ``device``. There must be none. (The initial weights, the data order and the synthetic
data are drawn on the CPU on purpose, for the same numbers on every device: those calls say ``device="cpu"``.)
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import PACKAGE, PackageCalls, as_package_code, compose_cfg
from teleport_runner.runner import run

try:  # the factories torch.set_default_device redirects
    from torch.utils._device import _device_constructors
    FACTORIES = _device_constructors()
except ImportError:  # a private helper: fall back to the common ones
    FACTORIES = {torch.arange, torch.empty, torch.eye, torch.full, torch.ones, torch.zeros, torch.tensor,
                 torch.as_tensor, torch.rand, torch.randn, torch.randint, torch.randperm, torch.linspace}


def implicit_device_calls() -> PackageCalls:
    """Records each tensor factory called from teleport_runner without ``device=``."""
    return PackageCalls(lambda func, kwargs: func in FACTORIES and kwargs.get("device") is None)


def run_recorded(cfg, run_dir) -> tuple[dict, list[str]]:
    with implicit_device_calls() as recorder:
        summary = run(cfg, run_dir)
    return summary, recorder.calls


REGRESSION = ["experiment=paper_regression", "steps=20"]
MNIST = ["problem.n_train=200", "problem.n_val=40", "epochs=1", "schedule.epochs=[0]", "schedule.step_offset=3",
         "teleport.batches=1"]
CASES = {
    "level_set, random start angle": ["experiment=paper_booth"],
    "level_set on a quadratic": ["experiment=ellipse"],
    "gl_data linear, exact inverse": REGRESSION + ["symmetry.parametrization=linear"],
    "gl_data exp, batch subgroup": REGRESSION + ["symmetry.parametrization=exp", "symmetry.subgroup=batch"],
    "gl_hidden exp, random start": REGRESSION + ["symmetry=gl_hidden", "symmetry.parametrization=exp",
                                                 "teleport.init=random", "teleport.init_scale=0.01"],
    "gl_data, the paper's literal form": REGRESSION + ["symmetry.form=paper"],
    "rescale, state transformed": ["experiment=relu_rescale", "steps=20", "optimizer=momentum", "optimizer.lr=1e-4",
                                   "teleport.optimizer_state=transform"],
    "gl_linear, state transformed": ["problem=mlp_regression", "problem.activation=identity", "symmetry=gl_linear",
                                     "steps=20", "schedule.every=10", "optimizer=momentum", "optimizer.lr=1e-4",
                                     "teleport.lr=1e-6", "teleport.max_group_norm=0.5",
                                     "teleport.optimizer_state=transform"],
    "random search, state reset": REGRESSION + ["teleport=random_search", "teleport.optimizer_state=reset"],
    "mnist gl_data exp, factored GL(512)": ["experiment=paper_mnist", "symmetry.parametrization=exp"] + MNIST,
    "mnist gl_hidden, batch subgroup": ["experiment=paper_mnist", "symmetry=gl_hidden", "symmetry.subgroup=batch",
                                        "teleport.batch_size=16"] + MNIST,
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_run_creates_every_tensor_on_an_explicit_device(case, tmp_path, synthetic_mnist_root):
    overrides = CASES[case] + ["device=cpu",
                               f"problem.data.root={synthetic_mnist_root}" if "mnist" in case else "seed=0"]
    summary, implicit = run_recorded(compose_cfg(*overrides), tmp_path / "run")
    assert summary["status"] == "completed", summary.get("message")
    assert summary["n_teleports"] >= 1  # the teleport path ran
    assert implicit == []


def test_a_resumed_run_creates_every_tensor_on_an_explicit_device(tmp_path):
    run_dir = tmp_path / "run"
    first, implicit = run_recorded(compose_cfg(*REGRESSION, "device=cpu", "checkpoint.every=10"), run_dir)
    assert first["status"] == "completed" and implicit == []
    resumed = compose_cfg("experiment=paper_regression", "steps=40", "device=cpu", "checkpoint.every=10",
                          "resume=true")
    summary, implicit = run_recorded(resumed, run_dir)
    assert summary["status"] == "completed" and implicit == []
    assert json.loads((run_dir / "summary.json").read_text())["steps_done"] == 40


def test_the_recorder_sees_a_factory_called_without_a_device():
    """The check itself: teleport_runner code that calls ``torch.eye(n)`` is recorded, ``device=`` is not."""
    from teleport_runner.symmetries import gl_elements

    with implicit_device_calls() as recorder:
        gl_elements.torch.eye(3)  # from this file: not the package's code, so not recorded
        torch.eye(3, device="cpu")
    assert recorder.calls == []
    make = as_package_code("def make():\n    return torch.eye(3)\n", "make", torch=torch)
    with implicit_device_calls() as recorder:
        make()
    assert len(recorder.calls) == 1 and recorder.calls[0].startswith("torch.eye at ")


def test_no_factory_call_in_the_package_source_omits_the_device():
    """The same rule read from the source, so it also covers paths the runs above do not take."""
    import ast

    names = {f.__name__ for f in FACTORIES}
    missing = []
    for path in sorted(Path(PACKAGE).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                    and "device" not in {k.arg for k in node.keywords}):
                missing.append(f"{path.relative_to(PACKAGE)}:{node.lineno} torch.{node.func.attr}")
    assert missing == []
