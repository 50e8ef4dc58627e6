"""Shared test helpers: compose a config like the CLI does, run it in-process or as a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hypothesis import settings
from torch.overrides import TorchFunctionMode

import teleport_runner
from teleport_runner import CONFIG_DIR
from teleport_runner.runner import run

#: Property-based tests draw the same examples on every run (a CI run never meets a case no run here met) and keep
#: no example database (.hypothesis/ in the current folder would replay an old failure in one checkout only).
settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")

REPO = Path(__file__).resolve().parents[1]
PACKAGE = str(Path(teleport_runner.__file__).parent)
TORCH = str(Path(torch.__file__).parent)


class PackageCalls(TorchFunctionMode):
    """Records ``"torch.<name> at <file>:<line>"`` for each torch function or tensor method, called from
    teleport_runner's own code (the first caller outside torch), for which ``wanted(func, kwargs)`` is true."""

    def __init__(self, wanted):
        super().__init__()
        self.wanted, self.calls = wanted, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.wanted(func, kwargs):
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_filename.startswith(TORCH):
                frame = frame.f_back
            if frame is not None and frame.f_code.co_filename.startswith(PACKAGE):
                name = getattr(func, "__name__", str(func))
                self.calls.append(f"torch.{name} at {frame.f_code.co_filename}:{frame.f_lineno}")
        return func(*args, **kwargs)


def compose_cfg(*overrides: str):
    """The config `teleport-train OVERRIDES` would run, with quiet logging and no plots by default."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=["logger=jsonl", "plots=false", *overrides])


@pytest.fixture(autouse=True)
def _no_full_errors(monkeypatch):
    """HYDRA_FULL_ERROR=1 in a developer's shell turns the one-line errors the tests expect into tracebacks, in
    this process and in every child that inherits os.environ: each test starts without it (a test wanting it sets
    it itself)."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)


@pytest.fixture
def run_config(tmp_path):
    """Run the composed config in-process; returns (summary, run_dir)."""
    counter = iter(range(10**6))

    def _run(*overrides: str):
        run_dir = tmp_path / f"run{next(counter)}"
        return run(compose_cfg(*overrides), run_dir), run_dir

    return _run


@pytest.fixture(scope="session")
def synthetic_mnist_root(tmp_path_factory) -> str:
    """A data root with small synthetic MNIST IDX files (1200 training images): tests that need MNIST's shapes,
    not its content, run where the real files are absent."""
    from teleport_runner.problems import data as idx

    return str(idx.write_synthetic(tmp_path_factory.mktemp("data"), "mnist", n_train=1200, n_test=40).parents[1])


def as_package_code(source: str, name: str, **globals_):
    """The function ``name`` defined by ``source``, compiled under a file name inside teleport_runner/: what a
    ``PackageCalls`` recorder must count (the recorders' self-tests)."""
    namespace = {"__name__": "probe", **globals_}
    exec(compile(source, str(Path(PACKAGE) / "probe.py"), "exec"), namespace)
    return namespace[name]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def run_cli(*args: str, cwd: Path = REPO, timeout: int = 300, env: dict | None = None):
    """`python -m teleport_runner.train ARGS` as a user runs it; returns the CompletedProcess."""
    full_env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "teleport_runner.train", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


#: Quiet runs: the run files only, no console table, no figures.
QUIET = ("logger=jsonl", "plots=false")


def summary_of(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def one_line_error(proc) -> str:
    """The one ``Error:`` line of a refused command (no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]
