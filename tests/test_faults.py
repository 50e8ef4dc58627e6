"""Fault injection: the run record under divergence, refused commands, resume, concurrent runs, signals at each
phase, torn files, a full disk, corrupted data and sizes that cannot work. Every case checks the exit code, a
message without a traceback, and what is on disk afterwards (issue: a run record you can trust)."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import compose_cfg, one_line_error, QUIET, read_jsonl, REPO, run_cli, summary_of
from teleport_runner.errors import ConfigError, DataError, RecordWriteError
from teleport_runner.runner import run
from teleport_runner.signals import StopRequest, handle_signals



# 1-2. Divergence: found at its own step, logged or not, and at the final iterate; plots never change it.
def test_divergence_between_logged_steps_names_the_real_step(run_config):
    summary, run_dir = run_config("optimizer.lr=0.1", "steps=1000", "log_every=1000")
    assert summary["status"] == "diverged" and "at step 3" in summary["message"]
    assert summary_of(run_dir)["status"] == "diverged"


def test_divergence_at_the_final_iterate(run_config):
    summary, _ = run_config("experiment=paper_booth", "optimizer.lr=5", "steps=10")
    assert summary["status"] == "diverged" and "final iterate" in summary["message"]


def test_diverging_2d_run_draws_its_figures_and_exits_3(tmp_path):
    proc = run_cli("optimizer.lr=0.1", "steps=100", "log_every=7", "logger=jsonl", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and "at step 3" in proc.stderr
    summary = summary_of(tmp_path)
    assert summary["status"] == "diverged" and "at step 3" in summary["message"]
    assert (tmp_path / "curves.png").exists()


def test_a_figure_that_fails_is_one_warning_and_changes_nothing(run_config, monkeypatch):
    import teleport_runner.reporting.run_figures as plots

    def broken(*args, **kwargs):
        raise TypeError("ufunc 'isfinite' not supported for the input types")

    monkeypatch.setattr(plots, "plot_run", broken)
    with pytest.warns(UserWarning, match="Figures skipped"):
        summary, run_dir = run_config("experiment=paper_booth", "plots=true")
    assert summary["status"] == "completed" and summary["message"] is None
    assert summary_of(run_dir)["status"] == "completed"


# 3. A refused command never rewrites a run's record.
def test_refused_resume_leaves_the_record_byte_identical(tmp_path):
    args = ["experiment=paper_booth", "checkpoint.every=5", *QUIET, f"hydra.run.dir={tmp_path}"]
    assert run_cli(*args).returncode == 0
    before = {p: p.read_bytes() for p in [*tmp_path.glob(".hydra/*"), *tmp_path.glob("*.json*")]}
    for refused in (["resume=true", "optimizer.lr=0.5"], ["optimizer.lr=abc"], ["resume=true", "seed=7"]):
        proc = run_cli(*args, *refused)
        assert proc.returncode == 2, proc.stderr
        one_line_error(proc)
        assert {p: p.read_bytes() for p in before} == before, refused


# 4. Resume keeps the validation row of the epoch its checkpoint ended.
def test_resume_from_an_epoch_end_checkpoint_keeps_val_rows(tmp_path, synthetic_mnist_root):
    mnist = ["problem=mnist", f"problem.data.root={synthetic_mnist_root}", "problem.n_train=200", "problem.n_val=40",
             "problem.hidden=[16,10]", "problem.batch_size=20", "teleport=none", "checkpoint.every=10"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run(compose_cfg(*mnist, "epochs=3"), whole)
    run(compose_cfg(*mnist, "epochs=1"), parts)  # stops at an epoch end, with a checkpoint there
    run(compose_cfg(*mnist, "epochs=3", "resume=true"), parts)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
    assert drop(read_jsonl(parts / "val.jsonl")) == drop(read_jsonl(whole / "val.jsonl"))
    assert len(read_jsonl(whole / "val.jsonl")) == 3


# 5. One live run per folder; a finished run's folder is not reused without resume.
def test_a_second_run_into_a_live_folder_is_refused(tmp_path):
    first = subprocess.Popen([sys.executable, "-m", "teleport_runner.train", "steps=100000000", "teleport=none",
                              *QUIET, f"hydra.run.dir={tmp_path}"], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "metrics.jsonl").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        config = (tmp_path / ".hydra" / "config.yaml").read_bytes()
        second = run_cli("steps=10", "seed=5", *QUIET, f"hydra.run.dir={tmp_path}")
        assert second.returncode == 2
        assert f"pid {first.pid}" in one_line_error(second)
        assert (tmp_path / ".hydra" / "config.yaml").read_bytes() == config
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 128 + signal.SIGTERM
    assert summary_of(tmp_path)["status"] == "interrupted"


def test_a_stale_lock_does_not_block_and_a_finished_folder_is_refused(tmp_path):
    (tmp_path / ".teleport.lock").write_text(json.dumps({"pid": 999999, "host": "gone"}) + "\n")
    run(compose_cfg("experiment=paper_booth"), tmp_path)  # the dead holder's lock is not held: the run starts
    before = (tmp_path / "summary.json").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run"):
        run(compose_cfg("experiment=paper_booth", "seed=3"), tmp_path)
    assert (tmp_path / "summary.json").read_bytes() == before


def test_a_refused_command_leaves_a_finished_runs_lock_file_as_it_was(tmp_path):
    """The lock file of a finished run says who ran it; a command refused there (no resume) leaves it byte for
    byte, while a lock file the refused command created itself is removed again."""
    run(compose_cfg("experiment=paper_booth"), tmp_path)
    lock = (tmp_path / ".teleport.lock").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run"):
        run(compose_cfg("experiment=paper_booth", "seed=3"), tmp_path)
    assert (tmp_path / ".teleport.lock").read_bytes() == lock
    with pytest.raises(ConfigError):
        run(compose_cfg("experiment=paper_booth", "resume=true"), tmp_path / "new")
    assert not (tmp_path / "new" / ".teleport.lock").exists()


# 6. Signals at each phase leave a consistent summary.
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_figures_are_drawn_keeps_the_summary(tmp_path, monkeypatch, sig):
    import teleport_runner.reporting.run_figures as plots

    def slow_figures(*args, **kwargs):
        os.kill(os.getpid(), sig)
        time.sleep(30)
        raise AssertionError("the signal did not stop the figures")

    monkeypatch.setattr(plots, "plot_run", slow_figures)
    with handle_signals() as stop, pytest.warns(UserWarning, match="interrupted by"):
        started = time.monotonic()
        summary = run(compose_cfg("experiment=paper_booth", "plots=true"), tmp_path, stop=stop)
    assert time.monotonic() - started < 10
    assert summary["status"] == "completed" and summary_of(tmp_path)["status"] == "completed"
    assert summary_of(tmp_path).get("message") is None


def test_a_signal_before_the_run_starts_writes_nothing(tmp_path):
    stop = StopRequest()
    stop.signum = signal.SIGTERM
    from teleport_runner.signals import Interrupted

    with pytest.raises(Interrupted):
        run(compose_cfg("experiment=paper_booth"), tmp_path, stop=stop)
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / ".hydra").exists()


def test_a_teleport_stops_within_a_second_of_sigterm(tmp_path):
    """SIGTERM inside the first teleport's ascent (a child that says so: it touches ``ascent`` at its first ascent
    step, so the signal never lands in the start-up instead, whatever the machine's load)."""
    marker = tmp_path / "ascent"
    code = ("import pathlib, sys\n"
            "from teleport_runner.teleport.base import TeleportSolver\n"
            "check_stop = TeleportSolver.check_stop\n"
            "def check_stop_and_say_so(self):\n"
            f"    pathlib.Path({str(marker)!r}).touch()\n"
            "    return check_stop(self)\n"
            "TeleportSolver.check_stop = check_stop_and_say_so\n"
            "sys.argv = ['teleport-train', 'teleport.steps=1000000000000', 'schedule.offset=0', "
            f"*{list(QUIET)!r}, 'hydra.run.dir={tmp_path / 'run'}']\n"
            "from teleport_runner.train import main\nmain()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120  # start-up on a loaded box; only guards against a hang
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    while not (tmp_path / "run" / "summary.json").exists() and time.monotonic() - sent < 30:
        time.sleep(0.01)
    stopped = time.monotonic() - sent  # the teleport rolled back, the checkpoint and summary written
    _, stderr = proc.communicate(timeout=60)
    assert stopped < 1.5, f"the teleport took {stopped:.2f} s to stop"  # 1 s, with room for a loaded 2-core box
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr
    assert "during a teleport" in stderr, stderr  # stopped in the ascent, not before it
    summary = summary_of(tmp_path / "run")
    assert summary["status"] == "interrupted" and summary["n_teleports"] == 0 and summary["steps_done"] == 0


# 7. Torn last lines: skipped with a warning by readers, cut by resume; one bad run never stops a report.
def test_torn_last_line_is_skipped_and_resume_cuts_it(tmp_path):
    args = ["experiment=paper_rosenbrock", "steps=400", "checkpoint.every=100"]
    run(compose_cfg(*args, "steps=200"), tmp_path)
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 200, "loss": 0.12')  # what a kill mid-write leaves
    from teleport_runner.logging.jsonl import read_jsonl as read_rows

    with pytest.warns(UserWarning, match="torn last line"):
        assert len(read_rows(tmp_path / "metrics.jsonl")) == 200
    run(compose_cfg(*args, "resume=true"), tmp_path)
    steps = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert steps == list(range(400))


def test_report_survives_a_torn_file_and_an_unreadable_run(tmp_path):
    good, torn, broken = tmp_path / "good", tmp_path / "torn", tmp_path / "broken"
    for folder in (good, torn, broken):
        run(compose_cfg("experiment=paper_booth"), folder)
    with open(torn / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 1')
    (broken / "summary.json").write_text('{"status": "compl')
    proc = subprocess.run([sys.executable, "-m", "teleport_runner.reporting", str(tmp_path), "--no-figures"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "skipped" in proc.stderr
    assert (tmp_path / "report.md").exists()


# 8. A full disk: one line naming the file, whole rows only, and a failed summary.
class FullDisk:
    """A file handle whose writes stop after ``room`` bytes with ENOSPC (half a row on disk)."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, text: str) -> int:
        if len(text) > self.room:
            self.handle.write(text[:self.room])
            self.handle.flush()
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(text)
        return self.handle.write(text)

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_disk_full_mid_run_keeps_whole_rows_and_a_failed_summary(tmp_path, monkeypatch):
    from teleport_runner.logging.jsonl import JsonlSink

    original = JsonlSink._handle

    def full_after_a_while(self, kind):
        if kind not in self._handles:
            self._handles[kind] = FullDisk(original(self, kind), room=40_000)
        return self._handles[kind]

    monkeypatch.setattr(JsonlSink, "_handle", full_after_a_while)
    with pytest.raises(RecordWriteError, match="no space left on device"):
        run(compose_cfg("experiment=paper_rosenbrock", "steps=1000"), tmp_path)
    text = (tmp_path / "metrics.jsonl").read_text()
    assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())  # whole rows only
    assert 0 < len(text.splitlines()) < 1000
    summary = summary_of(tmp_path)
    assert summary["status"] == "failed" and "no space left on device" in summary["message"]


def test_disk_full_on_the_cli_is_one_line(tmp_path):
    inject = ("import errno, os, sys\n"
              "from teleport_runner.logging import jsonl\n"
              "def write(self, rows, kind='train'):\n"
              "    raise jsonl.RecordWriteError('could not write ' + str(self.run_dir / jsonl.FILES[kind]) + "
              "': no space left on device')\n"
              "jsonl.JsonlSink.log_rows = write\n"
              "from teleport_runner.train import main\n"
              f"sys.argv = ['teleport-train', 'logger=jsonl', 'plots=false', 'hydra.run.dir={tmp_path}']\n"
              "main()\n")
    proc = subprocess.run([sys.executable, "-c", inject], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "no space left on device" in one_line_error(proc)
    assert summary_of(tmp_path)["status"] == "failed"


# 9. Corrupted data: one line naming the file.
def test_corrupted_gzip_idx_is_one_line_naming_the_file(tmp_path):
    from teleport_runner.problems import data as idx

    folder = idx.write_synthetic(tmp_path / "data", "mnist", n_train=300, n_test=50, gz=True)
    target = folder / "train-images-idx3-ubyte.gz"
    raw = bytearray(target.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 64):  # flipped bytes inside the deflate stream
        raw[i] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=str(target).replace(".", r"\.")):
        idx.read_idx(target)
    proc = run_cli("problem=mnist", f"problem.data.root={tmp_path / 'data'}", "epochs=1", *QUIET,
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and str(target) in one_line_error(proc)
    assert not (tmp_path / "run" / "summary.json").exists()


# 10. Sizes that cannot work: refused before anything is allocated, or stopped by a signal.
@pytest.mark.parametrize("override", ["problem.hidden=[1000000,1000000]", "teleport.batch_size=1000000000"])
def test_sizes_that_cannot_fit_are_refused_at_once(tmp_path, synthetic_mnist_root, override):
    started = time.monotonic()
    with pytest.raises(ConfigError, match="teleport.batch_size|GiB"):
        run(compose_cfg("experiment=paper_mnist", f"problem.data.root={synthetic_mnist_root}", override), tmp_path)
    assert time.monotonic() - started < 2
    assert not any(tmp_path.iterdir()) if tmp_path.exists() else True


def test_a_huge_step_count_builds_no_schedule_list():
    from teleport_runner.schedules import Every

    steps = Every(every=100).steps(10**12)
    assert 10**11 in steps and 10**11 + 1 not in steps and len(steps) == 10**10 - 1


# Types: the same one-line style as value errors.
@pytest.mark.parametrize("override, message", [
    ("optimizer.lr=abc", "Invalid optimizer.lr: 'abc'; it must be a number."),
    ("teleport.steps=abc", "Invalid teleport.steps: 'abc'; it must be an integer."),
    ("schedule.every=1.5", "Invalid schedule.every: 1.5; it must be an integer."),
    ("problem.start=[a,b]", "Invalid problem.start"),
])
def test_type_errors_name_the_key(override, message, tmp_path):
    with pytest.raises(ConfigError) as info:
        run(compose_cfg(override), tmp_path)
    assert message in str(info.value)
    assert not (tmp_path / ".hydra").exists()


# 11. Exit codes: a sweep with a failed job runs them all, reports them, exits non-zero.
def test_sweep_with_a_diverged_job_runs_all_and_exits_1(tmp_path):
    proc = run_cli("-m", "optimizer.lr=0.1,0.001", "steps=50", *QUIET, "hydra.callbacks.report.figures=false",
                   f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 1, proc.stderr
    assert "1 diverged" in proc.stderr
    statuses = sorted(summary_of(tmp_path / str(i))["status"] for i in range(2))
    assert statuses == ["completed", "diverged"]
    assert (tmp_path / "report.md").exists()
