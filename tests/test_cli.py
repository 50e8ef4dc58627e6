"""The CLI as a user runs it: overrides through a subprocess, and bad values rejected with a clear message."""
import json
from pathlib import Path

import pytest
import yaml

from conftest import one_line_error, QUIET, read_jsonl, run_cli


def test_overrides_reach_the_run(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("experiment=paper_booth", "optimizer.lr=0.05", "seed=7", "teleport.steps=3", "logger=jsonl",
                   "plots=false", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["seed"] == 7 and summary["status"] == "completed"
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["optimizer"]["lr"] == 0.05 and config["teleport"]["steps"] == 3
    # Booth at the start (5, -5): h = (-12, 0), so L = 144; one GD step with lr 0.05 follows
    losses = [m["loss"] for m in read_jsonl(run_dir / "metrics.jsonl")]
    assert losses[0] == pytest.approx(144.0)
    grad = [2 * -12 * 1 + 0, 2 * -12 * 2 + 0]  # dL/dx = 2 u dh_u/dx + 2 v dh_v/dx with v = 0
    x = [5 - 0.05 * grad[0], -5 - 0.05 * grad[1]]
    assert losses[1] == pytest.approx((x[0] + 2 * x[1] - 7) ** 2 + (2 * x[0] + x[1] - 5) ** 2, rel=1e-5)


def test_help_names_the_tool_its_starting_commands_and_every_group():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("teleport-train: gradient descent with symmetry teleportation")
    assert "teleport-report outputs/multirun/<time>" in proc.stdout and "paper_booth" in proc.stdout
    for group in ("experiment", "problem", "symmetry", "teleport", "optimizer", "schedule", "logger"):
        assert f"\n{group}: " in proc.stdout  # Hydra's list of the group's options follows the header


BAD_OVERRIDES = [
    # (overrides, words the message must contain)
    (["experiment=nope"], ["experiment/nope", "paper_booth", "paper_rosenbrock"]),
    (["problem=nope"], ["problem/nope", "rosenbrock", "booth"]),
    (["teleport.lrr=1"], ["lrr"]),
    (["dtype=float16"], ["float16", "float32", "float64"]),
    (["device=cuda"], ["cuda", "device=cpu"]),
    (["device=tpu"], ["tpu", "auto"]),
    (["optimizer.lr=-1"], ["learning rate", "-1"]),
    (["steps=0"], ["steps", "0", "positive"]),
    (["teleport.steps=0"], ["teleport.steps", "0"]),
    (["teleport.lr=0"], ["teleport.lr", "0"]),
    (["teleport.optimizer_state=magic"], ["magic", "keep", "reset", "transform"]),
    (["schedule.every=0"], ["schedule.every", "0"]),
    (["problem=quadratic", "problem.A=[[1,2],[2,1]]"], ["positive definite"]),
    (["problem.start=[1,2,3]"], ["start", "R^2"]),
    (["problem=mlp_regression", "symmetry=level_set"], ["level_set", "mlp_regression", "gl_data", "rescale"]),
    (["problem=mlp_regression", "problem.activation=tanh", "symmetry=rescale"], ["rescale", "tanh"]),
    (["problem=mlp_regression", "problem.n_samples=9", "symmetry=gl_data"], ["gl_data", "9"]),
    (["problem=mlp_regression", "problem.dims=[5,0,7,8]"], ["0"]),
    (["problem=mlp_regression", "symmetry=rescale", "optimizer=adagrad", "teleport.optimizer_state=transform",
      "symmetry=gl_data"], ["transform"]),
    (["problem=mnist", "problem.data.root=/nonexistent/folder"], ["/nonexistent/folder", "MNIST"]),
    (["problem=mnist", "problem.batch_size=0"], ["batch_size", "0"]),
    (["seed=1.5"], ["seed", "1.5", "integer"]),
    (["optimizer.lr=abc"], ["Invalid optimizer.lr: 'abc'; it must be a number."]),
    (["loss_thresholds=[0.1,abc]"], ["loss_thresholds", "abc", "list of numbers"]),
    (["-m", "--cfg", "job"], ["Only one of", "--help"]),  # Hydra's own command-line check
    (["=3"], ["'=3'", "key=value"]),
    (["~problem"], ["No problem chosen", "rosenbrock", "mlp_regression"]),
]


@pytest.mark.parametrize("overrides,words", BAD_OVERRIDES, ids=[" ".join(o) for o, _ in BAD_OVERRIDES])
def test_bad_values_are_rejected_clearly(tmp_path, overrides, words):
    proc = run_cli(*overrides, "logger=jsonl", "plots=false", f"hydra.run.dir={tmp_path / 'run'}", timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    for word in words:
        assert word in proc.stderr, proc.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # rejected before any work


def unwritable_folders(tmp_path):
    (tmp_path / "a_file").write_text("")
    yield tmp_path / "a_file" / "run"  # a file stands in the path
    if Path("/proc").is_dir():
        yield Path("/proc/teleport_runner_run")  # os.access says writable to root; mkdir fails


def test_an_output_folder_that_cannot_be_made_fails_in_one_line(tmp_path):
    for folder in unwritable_folders(tmp_path):
        proc = run_cli("experiment=paper_booth", f"hydra.run.dir={folder}", timeout=120)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr + proc.stdout
        assert f"the output folder '{folder}' cannot be created" in proc.stderr and "hydra.run.dir=" in proc.stderr


def test_schedule_outside_the_run_warns_and_names_the_steps(tmp_path):
    proc = run_cli("experiment=paper_booth", "schedule.steps=[4,50]", "logger=jsonl", "plots=false",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0
    assert "[50]" in proc.stderr and "Traceback" not in proc.stderr
    assert [e["step"] for e in read_jsonl(tmp_path / "run" / "teleports.jsonl")] == [4]


def test_the_readme_extension_example_runs(tmp_path):
    """docs/design.md 'Adding a problem or a symmetry': a problem from the user's own module and config folder (-cd)."""
    readme = (Path(__file__).parents[1] / "docs" / "design.md").read_text()
    (tmp_path / "my_problems.py").write_text(readme.split("# my_problems.py\n")[1].split("```")[0])
    (tmp_path / "my_conf" / "problem").mkdir(parents=True)
    (tmp_path / "my_conf" / "problem" / "cubic_valley.yaml").write_text(
        "_target_: my_problems.CubicValley\nstart: [2.0, 1.0]\n")
    summaries = {}
    for teleport in ("gradient_ascent", "none"):
        run_dir = tmp_path / teleport
        proc = run_cli("-cd", str(tmp_path / "my_conf"), "problem=cubic_valley", "symmetry=level_set", "steps=500",
                       f"teleport={teleport}", "logger=jsonl", "plots=false", f"hydra.run.dir={run_dir}",
                       cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
        assert proc.returncode == 0, proc.stderr
        summaries[teleport] = json.loads((run_dir / "summary.json").read_text())
    teleported = summaries["gradient_ascent"]
    assert teleported["n_teleports"] == 4 and teleported["n_teleports_rejected"] == 0
    assert teleported["final_loss"] < 1e-2 * summaries["none"]["final_loss"]


def test_version_and_the_module_entry_point(tmp_path):
    """`teleport-train --version` prints the installed version before Hydra starts; `python -m teleport_runner`
    is the same command as `teleport-train`."""
    import subprocess
    import sys

    import teleport_runner

    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout == f"teleport-train {teleport_runner.version()}\n"
    assert teleport_runner.version() == teleport_runner.__version__  # pyproject reads its version from there
    proc = subprocess.run([sys.executable, "-m", "teleport_runner", "experiment=paper_booth", "logger=jsonl",
                           "plots=false", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["n_teleports"] == 1


@pytest.mark.parametrize("override, words", [
    ("optimizer=nosuch", ["'optimizer/nosuch'", "Available options in 'optimizer': adagrad, adam, momentum, rmsprop, sgd."]),
    ("nosuchkey=1", ["Could not override 'nosuchkey'", "+nosuchkey=1"]),
    ("seed=[1,", ["no viable alternative at input '[1,'"]),
])
def test_hydra_config_errors_are_one_paragraph_and_refused(tmp_path, override, words):
    """Hydra's own errors (a bad group option, key or override) read like every other refusal: one ``Error:``
    line naming the value and what is valid, no search path, no traceback hint, exit 2, nothing written."""
    proc = run_cli(override, f"hydra.run.dir={tmp_path}/run")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert "search path" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_refused_command_leaves_no_folder_and_no_lock(tmp_path):
    """A refused command writes nothing: the run folder Hydra made for it is removed again, a lock file it held
    is removed, and a folder the user made beforehand stays (empty, as it was)."""
    for override in ("optimizer.lr=-1", "resume=true"):
        proc = run_cli(override, f"hydra.run.dir={tmp_path}/new")
        assert proc.returncode == 2 and proc.stderr.startswith("Error:"), proc.stderr
        assert not (tmp_path / "new").exists(), list((tmp_path / "new").iterdir())
    mine = tmp_path / "mine"
    mine.mkdir()
    proc = run_cli("resume=true", f"hydra.run.dir={mine}")
    assert proc.returncode == 2 and mine.is_dir() and not list(mine.iterdir())
    proc = run_cli("optimizer.lr=-1", cwd=mine)  # the default timestamped folder
    assert proc.returncode == 2 and not list((mine / "outputs" / "runs").iterdir())


def test_errors_that_are_not_config_errors_still_reach_hydras_handler(capsys):
    """The one-paragraph wrapper handles Hydra's config errors only; anything else raised under Hydra's
    ``run_and_report`` (an OSError making a run folder, a plugin's error) goes to Hydra's own handler as before:
    reported, exit 1 (which main maps to 2 when no job started), never an uncaught exception."""
    import hydra._internal.utils as hydra_utils

    from teleport_runner.hydra_patches import _config_errors_in_one_paragraph

    hydras = getattr(hydra_utils.run_and_report, "__wrapped__", hydra_utils.run_and_report)
    run_and_report = _config_errors_in_one_paragraph(hydras)

    def fails():
        raise RuntimeError("not a config error")

    with pytest.raises(SystemExit) as exit_:
        run_and_report(fails)
    assert exit_.value.code == 1 and "not a config error" in capsys.readouterr().err
    assert run_and_report(lambda: 7) == 7


def test_an_output_folder_name_the_os_refuses_is_refused_not_a_crash(tmp_path):
    """A run folder whose name the OS refuses (too long) is a refused command, exit 2, nothing written; the
    pre-checks (the folders that existed, the write check) never crash on it."""
    long = "a" * 300
    proc = run_cli(f"hydra.run.dir={tmp_path}/{long}", *QUIET)
    assert proc.returncode == 2, proc.stderr
    assert one_line_error(proc).startswith("Error: the output folder")
    proc = run_cli(f"hydra.run.dir={tmp_path}/x${{seed}}{long}", *QUIET)  # known only once Hydra resolves it
    assert proc.returncode == 2, proc.stderr
    assert not list(tmp_path.iterdir())
