"""Review of issues 26/27 by fault injection: each test fails on the reviewed code for the reason its docstring
gives, and asserts what the issues ask for (an honest record, one-line errors, the documented exit codes)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import compose_cfg, one_line_error, QUIET, REPO, run_cli, summary_of
from teleport_runner.errors import UserError
from teleport_runner.runner import run



def record_bytes(run_dir: Path) -> dict:
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != ".teleport.lock"}


def cli_with(tmp_path: Path, patch: str, *args: str) -> subprocess.CompletedProcess:
    """`teleport-train ARGS` in a fresh interpreter, after ``patch`` (Python source) ran in it."""
    code = (f"import os, signal, sys\n{patch}\n"
            f"sys.argv = ['teleport-train', *{list(args)!r}]\n"
            "from teleport_runner.train import main\nmain()\n")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)


# --- Signals ------------------------------------------------------------------------------------------------------

SIGTERM_WHILE_BUILDING = (
    "import teleport_runner.runner as r\n"
    "_orig = r.check_top_level\n"
    "def check_top_level(cfg):\n"
    "    os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler's SIGTERM during start-up (imports, data) does\n"
    "    return _orig(cfg)\n"
    "r.check_top_level = check_top_level\n")


def test_sigterm_during_start_up_exits_143_and_claims_no_summary(tmp_path):
    """Today: exit 1 and 'Error: the run failed (Interrupted: ...). Its summary.json says so' with no summary.json:
    an interrupted start is reported as a failure (exit 1, not 143) and the message points at a file that does not
    exist. Issue 26: interrupted -> 128 + signal; a message that says what happened."""
    run_dir = tmp_path / "run"
    proc = cli_with(tmp_path, SIGTERM_WHILE_BUILDING, *QUIET, "steps=50", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "summary.json says so" not in proc.stderr  # there is no summary.json: nothing ran
    assert not (run_dir / "summary.json").exists()


def test_sigint_during_a_sweep_job_start_up_stops_the_sweep(tmp_path):
    """Today: the job's Interrupted is taken for a failure: a traceback is printed, a 'failed' summary is written
    for a job that never ran, and the sweep goes on with the next jobs (exit 1). train.py: 'Ctrl-C / SIGTERM stops
    the whole sweep' (130)."""
    patch = SIGTERM_WHILE_BUILDING.replace("SIGTERM", "SIGINT")
    proc = cli_with(tmp_path, patch, "-m", *QUIET, "steps=20", "seed=0,1", f"hydra.sweep.dir={tmp_path}",
                    "hydra.callbacks.report.enabled=false")
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "1" / "summary.json").exists()  # the sweep stopped at job 0
    job0 = tmp_path / "0" / "summary.json"
    assert not job0.exists() or json.loads(job0.read_text())["status"] == "interrupted"


def test_sigint_while_a_sweep_job_draws_figures_stops_the_sweep(tmp_path):
    """Today: a Ctrl-C that lands in a job's figures is swallowed as 'Figures skipped' and the sweep runs all its
    remaining jobs and exits 0 (the user has to press Ctrl-C again, at the right moment). The record of job 0 is
    complete either way; the sweep must stop with 130."""
    patch = ("import teleport_runner.reporting.run_figures as rf\n"
             "def plot_run(*a, **k):\n"
             "    os.kill(os.getpid(), signal.SIGINT)\n"
             "    import time; time.sleep(5)\n"
             "    return []\n"
             "rf.plot_run = plot_run\n")
    proc = cli_with(tmp_path, patch, "-m", "logger=jsonl", "plots=true", "steps=20", "seed=0,1,2",
                    f"hydra.sweep.dir={tmp_path}", "hydra.callbacks.report.enabled=false")
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr
    assert summary_of(tmp_path / "0")["status"] == "completed"
    assert not (tmp_path / "1" / "summary.json").exists()


# --- Refused commands must not touch the record, and must be refused (exit 2) -------------------------------------

def test_resume_refused_for_a_damaged_metrics_file_leaves_the_record_unchanged(tmp_path):
    """Today: the damaged-row check runs in JsonlSink, after RunRecord.begin: the command is refused (exit 2) but
    .hydra/config.yaml and overrides.yaml already say steps=400 resume=true. Issue 26.3: a refused command
    never rewrites the record."""
    args = (*QUIET, "experiment=paper_rosenbrock", "checkpoint.every=50")
    run(compose_cfg(*args, "steps=200"), tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines(True)
    lines[5] = '{"step": garbage\n'  # a damaged row (not the torn last one)
    (tmp_path / "metrics.jsonl").write_text("".join(lines))
    before = record_bytes(tmp_path)
    proc = run_cli(*args, "steps=400", "resume=true", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr
    assert "damaged" in one_line_error(proc)
    after = record_bytes(tmp_path)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert changed == [], f"the refused resume changed {changed}"


@pytest.mark.parametrize("damage", ["a list", "no fingerprint", "a string step", "another optimizer"])
def test_a_malformed_checkpoint_is_refused_in_one_line(tmp_path, damage):
    """Today: a checkpoint that torch.load reads but that is not this runner's dict ([1, 2], a dict without
    'fingerprint', step 'abc', an optimizer state of another shape) gives exit 1 and 'the run failed
    (AttributeError/KeyError/TypeError/ValueError ...). Its summary.json says so' while summary.json still says
    completed. Expected: exit 2, one line naming the checkpoint, the folder untouched."""
    args = (*QUIET, "steps=50", "checkpoint.every=10")
    run(compose_cfg(*args), tmp_path)
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    if damage == "a list":
        state = [1, 2]
    elif damage == "no fingerprint":
        del state["fingerprint"]
    elif damage == "a string step":
        state["step"] = "abc"
    else:
        state["optimizer"] = {"state": {}, "param_groups": []}
    torch.save(state, path)
    before = record_bytes(tmp_path)
    proc = run_cli(*args, "resume=true", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr
    assert str(path) in one_line_error(proc)
    assert "summary.json says so" not in proc.stderr
    assert record_bytes(tmp_path) == before


def test_an_adam_betas_list_of_one_is_refused_as_a_value(tmp_path):
    """Today: `optimizer=adam optimizer.betas=[0.9]` gets past the type check and fails in torch with an OmegaConf
    ConfigIndexError: exit 1, a three-line 'Error: the run failed (...). Its summary.json says so' and no
    summary.json. It is a bad value: exit 2, one line naming optimizer.betas."""
    proc = run_cli(*QUIET, "optimizer=adam", "optimizer.betas=[0.9]", "steps=10", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr
    assert "optimizer.betas" in one_line_error(proc)
    assert "summary.json says so" not in proc.stderr


# --- The record says what the run did -----------------------------------------------------------------------------

def test_resume_with_other_loss_thresholds_does_not_misstate_steps_to_loss(tmp_path):
    """Today: loss_thresholds is not in the checkpoint's fingerprint, and RunStats.load_state_dict restores the
    old thresholds: the resumed run's .hydra/config.yaml says [0.5, 1e-09] while summary.steps_to_loss holds
    0.1/0.001/1e-06, so the report counts 0.5 as never reached. Expected: refused (record unchanged), or a summary
    whose steps_to_loss has exactly the configured thresholds."""
    args = (*QUIET, "experiment=paper_rosenbrock", "checkpoint.every=100")
    run(compose_cfg(*args, "steps=200"), tmp_path)
    before = record_bytes(tmp_path)
    try:
        summary = run(compose_cfg(*args, "steps=300", "resume=true", "loss_thresholds=[0.5,1e-9]"), tmp_path)
    except UserError:
        assert record_bytes(tmp_path) == before
        return
    assert set(summary["steps_to_loss"]) == {"0.5", "1e-09"}, summary["steps_to_loss"]
    assert set(summary_of(tmp_path)["steps_to_loss"]) == {"0.5", "1e-09"}


def test_steps_to_loss_agrees_with_the_final_loss(tmp_path):
    """Today: experiment=paper_booth loss_thresholds=[1e-3] ends with final_loss 9.45e-4 and
    steps_to_loss {"0.001": null} ("not reached" in the console and the report): the final iterate counts for
    final_loss and divergence (issue 26.2) but not for the thresholds."""
    summary = run(compose_cfg("experiment=paper_booth", "loss_thresholds=[1e-3]"), tmp_path)
    assert summary["status"] == "completed" and summary["final_loss"] < 1e-3
    assert summary["steps_to_loss"]["0.001"] is not None, summary


def test_report_does_not_count_an_untracked_threshold_as_not_reached(tmp_path):
    """Today: runs with different loss_thresholds share one column per threshold; a run that never tracked 0.1
    is shown as '- (0/1)' (none of 1 reached it) and report.json says reached 0, n_completed 1, though its loss went
    below 0.1 on the first steps. Expected: such a cell says the threshold was not measured (or the column is
    left out for that group), never that it was not reached."""
    from teleport_runner.reporting.build import build_report

    run(compose_cfg("experiment=paper_booth", "loss_thresholds=[0.1]"), tmp_path / "a")
    run(compose_cfg("experiment=paper_booth", "loss_thresholds=[1e-3]"), tmp_path / "b")
    report = build_report([tmp_path], figures=False)
    row = next(r for r in report["results"] if "0.001" in r["group"])
    assert "(0/1)" not in row["steps to 0.1"], row
