"""The guard around every teleport: drifting or non-finite candidates are rolled back, counted, and training
goes on. Uses the loop directly with live objects (no Hydra), as a notebook would."""
import torch

from teleport_runner.logging.base import Sink
from teleport_runner.loop import RunStats, train
from teleport_runner.problems import Booth
from teleport_runner.symmetries import LevelSetRotation
from teleport_runner.teleport import GradientAscent, RandomSearch


class Recorder(Sink):
    def __init__(self):
        self.rows = {"train": [], "teleport": [], "val": []}

    def log(self, step, metrics, kind="train"):
        self.rows[kind].append({"step": step, **metrics})


class BrokenAction(LevelSetRotation):
    """The true level-set action, followed by a defect: a scale (drift) or NaN."""

    def __init__(self, defect):
        self.defect = defect

    def act(self, xi, params, ctx):
        (x,) = super().act(xi, params, ctx)
        return [x * float("nan")] if self.defect == "nan" else [x * 1.01]


def run_booth(symmetry, solver, steps=10, teleport_steps=(2, 5)):
    problem = Booth()
    problem.setup("cpu", torch.float64, 0)
    symmetry.bind(problem)
    params = problem.init_params()
    optimizer = torch.optim.SGD(params, lr=0.08)
    sink, stats = Recorder(), RunStats([1e-2])
    result = train(problem=problem, params=params, optimizer=optimizer, symmetry=symmetry, teleporter=solver,
                   teleport_steps=list(teleport_steps), total_steps=steps, sink=sink,
                   generator=torch.Generator().manual_seed(0), stats=stats)
    return result, stats, sink


def test_drifting_teleports_are_rolled_back_and_training_goes_on():
    result, stats, sink = run_booth(BrokenAction("scale"), GradientAscent(steps=3, lr=1e-3))
    _, reference_stats, reference = run_booth(LevelSetRotation(), GradientAscent(steps=3, lr=1e-3),
                                              teleport_steps=())
    assert result["status"] == "completed"
    assert stats.n_teleports == 2 and stats.n_teleports_rejected == 2
    assert all(not e["accepted"] and e["rel_loss_drift"] > 1e-10 for e in sink.rows["teleport"])
    # rolled back: the run is exactly the run without teleports
    assert [r["loss"] for r in sink.rows["train"]] == [r["loss"] for r in reference.rows["train"]]
    assert stats.max_rel_loss_drift == 0.0  # only accepted teleports count towards the drift


def test_non_finite_teleports_are_rejected():
    result, stats, sink = run_booth(BrokenAction("nan"), RandomSearch(samples=3))
    assert result["status"] == "completed" and stats.n_teleports_rejected == 2
    assert all(r["loss"] == r["loss"] for r in sink.rows["train"])  # no NaN leaked into training


def test_exact_teleports_are_accepted_and_raise_the_gradient():
    result, stats, sink = run_booth(LevelSetRotation(), GradientAscent(steps=10, lr=1e-3), teleport_steps=(4,))
    (event,) = sink.rows["teleport"]
    assert event["accepted"] and stats.n_teleports_rejected == 0
    assert event["grad_norm_sq_after"] > event["grad_norm_sq_before"]
    assert abs(event["loss_after"] - event["loss_before"]) <= 1e-10 * event["loss_before"]


def test_gradient_ascent_never_returns_a_worse_point_than_its_start():
    # From the identity the best visited iterate is at least the start, even with a wild ascent step.
    _, _, sink = run_booth(LevelSetRotation(), GradientAscent(steps=5, lr=10.0), teleport_steps=(3,))
    (event,) = sink.rows["teleport"]
    assert event["grad_norm_sq_after"] >= event["grad_norm_sq_before"] * (1 - 1e-12)


def test_max_group_norm_bounds_the_move():
    _, _, sink = run_booth(LevelSetRotation(), GradientAscent(steps=10, lr=1.0, max_group_norm=1e-3),
                           teleport_steps=(4,))
    (event,) = sink.rows["teleport"]
    moved = torch.tensor(event["params_after"]) - torch.tensor(event["params_before"])
    assert 0 < moved.norm() < 0.05  # a rotation by at most 1e-3 rad in h-space moves x only a little
