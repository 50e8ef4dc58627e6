"""No host sync per descent step, and none per ascent step, counted without a GPU.

On a GPU a host sync (``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()``, ``.cpu()``, ...) waits for every
queued kernel, so one per step caps the speed whatever the kernels cost. The runner keeps per-step metrics on the
device and copies them in one sync per flush (every 200 steps), at epoch ends (validation) and once per teleport
(its guard and the solver's choice of the best iterate). These tests count the syncs made from the package's own
code during real runs (a ``TorchFunctionMode`` sees tensor methods too) and check that they do not grow with the
number of descent steps between flushes, nor with the number of ascent steps in a teleport; and that the work
meant to be done once per teleport (a pseudo-inverse, the network's forward trace) is not redone per ascent step.
One read per ``exp`` ascent step is allowed: the exponential reads its input's norms to count its squarings (as
``torch.linalg.matrix_exp`` does inside, on CUDA; see ``symmetries/exponential.py``).
"""
from __future__ import annotations

import pytest
import torch
from torch import Tensor

from conftest import PackageCalls, as_package_code, compose_cfg
from teleport_runner.runner import run

SYNCS = {Tensor.item, Tensor.tolist, Tensor.__bool__, Tensor.__float__, Tensor.__int__, Tensor.__index__,
         Tensor.cpu, Tensor.numpy}


def count_syncs(tmp_path, *overrides) -> tuple[int, dict]:
    with PackageCalls(lambda func, kwargs: func in SYNCS) as recorder:
        summary = run(compose_cfg(*overrides, "device=cpu"), tmp_path / f"run{len(list(tmp_path.iterdir()))}")
    assert summary["status"] == "completed", summary.get("message")
    return len(recorder.calls), summary


def test_descent_steps_make_no_host_sync_between_flushes(tmp_path):
    """400 more descent steps (metrics logged at every one) add two flushes' syncs, not 400."""
    short, _ = count_syncs(tmp_path, "problem=mlp_regression", "teleport=none", "steps=200")
    long, _ = count_syncs(tmp_path, "problem=mlp_regression", "teleport=none", "steps=600")
    assert 0 < long - short <= 2 * 4, (short, long)


def test_mini_batch_epochs_sync_per_epoch_not_per_step(tmp_path, synthetic_mnist_root):
    """MNIST-shaped, 50 steps per epoch: two more epochs add their validation and flush syncs only."""
    settings = ["problem=mnist", f"problem.data.root={synthetic_mnist_root}", "problem.n_train=1000",
                "problem.n_val=100", "problem.hidden=[16,10]", "teleport=none"]
    one, _ = count_syncs(tmp_path, *settings, "epochs=1")
    three, _ = count_syncs(tmp_path, *settings, "epochs=3")
    assert 0 < three - one <= 2 * 8, (one, three)


ASCENT_CASES = {  # overrides, and the host reads each ascent step may make
    "level_set": (["experiment=paper_rosenbrock", "steps=250", "dtype=float64"], 0),
    "gl_data linear, point bound": (["experiment=paper_regression", "steps=20", "symmetry.parametrization=linear"],
                                    0),
    "gl_data exp, path bound": (["experiment=paper_regression", "steps=20", "symmetry.parametrization=exp"], 1),
    "gl_hidden exp, batch subgroup": (["experiment=paper_regression", "steps=20", "symmetry=gl_hidden",
                                       "symmetry.parametrization=exp", "symmetry.subgroup=batch"], 1),
    "rescale": (["experiment=relu_rescale", "steps=20"], 0),
}


@pytest.mark.parametrize("case", list(ASCENT_CASES))
def test_ascent_steps_make_no_host_sync_but_the_exponentials_read(case, tmp_path):
    """A teleport of 12 ascent steps makes the syncs of one of 4 (its guard's and the final choice), plus, with
    ``exp`` steps, the one read of the exponential's norms per step (``exponential.expm``: the number of
    squarings; ``torch.linalg.matrix_exp`` makes the same read inside, on CUDA)."""
    overrides, reads_per_step = ASCENT_CASES[case]
    few, first = count_syncs(tmp_path, *overrides, "teleport.steps=4")
    many, second = count_syncs(tmp_path, *overrides, "teleport.steps=12")
    assert first["n_teleports"] == second["n_teleports"] >= 1
    assert many - few == (12 - 4) * reads_per_step * first["n_teleports"], (few, many)


@pytest.mark.parametrize("case", [c for c in ASCENT_CASES if c.startswith("gl_data")])
def test_per_teleport_work_is_done_once_not_per_ascent_step(case, tmp_path, monkeypatch):
    """gl_data's pseudo-inverse of the pair's input (an SVD) and the forward trace of the network on the teleport
    batch are computed once per teleport: as often with 12 ascent steps as with 4."""
    from teleport_runner.problems.mlp import NetworkProblem

    traces = []
    trace = NetworkProblem.trace
    monkeypatch.setattr(NetworkProblem, "trace", lambda self, *a, **k: traces.append(1) or trace(self, *a, **k))
    counts = []
    for steps in (4, 12):
        traces.clear()
        with PackageCalls(lambda func, kwargs: func is torch.linalg.pinv) as pinvs:
            run(compose_cfg(*ASCENT_CASES[case][0], f"teleport.steps={steps}", "device=cpu"), tmp_path / f"run{steps}")
        counts.append((len(pinvs.calls), len(traces)))
    assert counts[0] == counts[1] and min(counts[0]) >= 1, counts


def test_the_count_sees_a_sync_in_the_package(tmp_path, monkeypatch):
    """The check itself: a descent step that reads its loss on the host (a classic slow loop) is counted, when
    that code is the package's (compiled here under a file name inside teleport_runner/)."""
    from teleport_runner import loop

    source = ("def add_and_read(self, step, loss, params, elapsed):\n"
              "    loss.item()  # what the runner must not do per step\n"
              "    return add(self, step, loss, params, elapsed)\n")
    monkeypatch.setattr(loop.MetricBuffer, "add", as_package_code(source, "add_and_read", add=loop.MetricBuffer.add))
    short, _ = count_syncs(tmp_path, "problem=mlp_regression", "teleport=none", "steps=200")
    long, _ = count_syncs(tmp_path, "problem=mlp_regression", "teleport=none", "steps=600")
    assert long - short >= 400
