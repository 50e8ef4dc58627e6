"""Checkpoints and resume: a run killed (SIGKILL) or interrupted (SIGTERM, SIGINT) and resumed with
resume=true ends with the same numbers as a run never interrupted (CPU, fixed seed)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def teleport_train(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "teleport_runner.train", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=180, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert proc.returncode == 0, f"teleport-train {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc

# Rosenbrock long enough (~3 s of steps) to be stopped mid-run; checkpoints every 500 steps.
ARGS = ["experiment=paper_rosenbrock", "steps=10000", "checkpoint.every=500", "logger=jsonl", "plots=false",
        "device=cpu"]
TIMES = {"time_total_s", "time_teleport_s", "time_eval_s", "time_descent_s", "run_dir", "message"}


def numbers(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in TIMES}


def rows(run_dir: Path, name: str = "metrics.jsonl") -> list[dict]:
    out = [json.loads(line) for line in (run_dir / name).read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time_s",)} for r in out]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reference")
    proc = teleport_train(*ARGS, f"hydra.run.dir={run}")
    assert proc.stdout.strip() == ""  # logger=jsonl: the run files only, nothing on the console
    return run


def start_and_stop(run: Path, sig: int) -> subprocess.Popen:
    """Start a run, wait for its first checkpoint, send ``sig``; return the finished process."""
    proc = subprocess.Popen([sys.executable, "-m", "teleport_runner.train", *ARGS, f"hydra.run.dir={run}"],
                            cwd=ROOT, env={**os.environ, "HYDRA_FULL_ERROR": "0"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.01)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["SIGKILL", "SIGTERM", "SIGINT"])
def test_stop_and_resume_gives_identical_numbers(tmp_path, reference, sig):
    run = tmp_path / "run"
    proc = start_and_stop(run, sig)
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)  # plain data only
    assert set(checkpoint) >= {"params", "optimizer", "torch_rng_state", "generator_state", "step", "stats"}
    assert 0 < checkpoint["step"] < 10000
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL and not (run / "summary.json").exists()
    else:  # a clean stop between two steps: status interrupted, a checkpoint at the last completed step
        assert proc.returncode == 128 + sig  # the shell's convention: 143 for SIGTERM, 130 for SIGINT
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "interrupted" and "resume=true" in summary["message"]
        assert summary["steps_done"] == checkpoint["step"]

    teleport_train(*ARGS, f"hydra.run.dir={run}", "resume=true")
    assert numbers(run) == numbers(reference)
    assert rows(run) == rows(reference)  # every logged loss and ||grad||^2, none twice
    assert rows(run, "teleports.jsonl") == rows(reference, "teleports.jsonl")


def test_resume_refuses_other_settings(tmp_path):
    from teleport_runner.checkpoint import Checkpointer
    from teleport_runner.errors import ConfigError
    from teleport_runner.loop import RunStats

    def make(lr):
        params = [torch.tensor([1.0, 2.0], requires_grad=True)]
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
        return params, opt, torch.Generator().manual_seed(1), RunStats(loss_thresholds=[0.1])

    params, opt, gen, stats = make(0.1)
    params[0].grad = torch.ones(2)
    opt.step()
    gen.manual_seed(7)
    stats.add_loss(3, 0.01)
    Checkpointer(tmp_path / "c.pt", params=params, optimizer=opt, generator=gen, stats=stats,
                 config={"seed": 0, "optimizer": {"lr": 0.1}}).save(5)

    p2, o2, g2, s2 = make(0.1)
    step = Checkpointer(tmp_path / "c.pt", params=p2, optimizer=o2, generator=g2, stats=s2,
                        config={"seed": 0, "optimizer": {"lr": 0.1}}).load(10)
    assert step == 5 and torch.equal(p2[0], params[0]) and s2.steps_to_loss == {"0.1": 3}
    assert torch.equal(o2.state[p2[0]]["momentum_buffer"], opt.state[params[0]]["momentum_buffer"])
    assert torch.equal(g2.get_state(), gen.get_state())

    with pytest.raises(ConfigError, match="optimizer.lr: 0.1 in the checkpoint, 0.2 now"):
        Checkpointer(tmp_path / "c.pt", params=p2, optimizer=o2, generator=g2, stats=s2,
                     config={"seed": 0, "optimizer": {"lr": 0.2}}).load(10)
    with pytest.raises(ConfigError, match="no checkpoint"):
        Checkpointer(tmp_path / "none.pt", params=p2, optimizer=o2, generator=g2, stats=s2, config={}).load()


def test_resume_values(tmp_path):
    from teleport_runner.checkpoint import should_resume
    from teleport_runner.errors import ConfigError

    assert should_resume("auto", tmp_path / "checkpoint.pt") is False  # nothing yet: start
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert should_resume("auto", tmp_path / "checkpoint.pt") is True  # a requeued job continues
    assert should_resume(False, tmp_path / "checkpoint.pt") is False
    with pytest.raises(ConfigError, match="Invalid resume"):
        should_resume("maybe", tmp_path / "checkpoint.pt")
