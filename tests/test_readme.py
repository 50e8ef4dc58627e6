"""The README is a door: short, starts with what the tool is and the two commands, links only to files in the
repository, and every `teleport-train` command it marks as quick runs as written.

A code block or table right after a line that is only `<!-- quick -->` is quick: each `teleport-train` line of the block, or
each `teleport-train ...` code span of the table, is run here with `hydra.run.dir`/`hydra.sweep.dir` added (a
folder under tmp_path). The MNIST commands read the real IDX files where they are found ($TELEPORT_DATA_ROOT or
../shared/data) and small synthetic ones otherwise.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from itertools import takewhile
from pathlib import Path

from teleport_runner import CONFIG_DIR
from teleport_runner.problems import data as idx

from test_data import real_root  # tests/ is on sys.path (pytest rootdir import mode)

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
QUICK = "<!-- quick -->"


def quick_commands(text: str) -> list[list[str]]:
    """The argv of each quick `teleport-train` command, in order, without repeats."""
    commands: list[str] = []
    for part in re.split(rf"^{QUICK}$", text, flags=re.M)[1:]:
        block = part.lstrip("\n")
        if block.startswith("```"):
            body = block.split("```")[1].split("\n", 1)[1].replace("\\\n", " ")  # the language tag dropped
            commands += [line for line in body.splitlines() if line.strip().startswith("teleport-train")]
        elif block.startswith("|"):
            table = "\n".join(takewhile(lambda line: line.startswith("|"), block.splitlines()))
            commands += re.findall(r"`(teleport-train [^`]*)`", table)
        else:
            raise AssertionError(f"{QUICK} must come right before a code block or a table: {block[:60]!r}")
    argvs = [shlex.split(command, comments=True) for command in commands]
    return [argv for i, argv in enumerate(argvs) if argv not in argvs[:i]]


def test_the_marker_finds_code_blocks_and_tables():
    text = (f"{QUICK}\n```bash\nteleport-train a=1   # note\n  teleport-train -m b=1,2 \\\n    c=3\nls\n```\n"
            f"```bash\nteleport-train not_marked=1\n```\n{QUICK}\n| x | y |\n|---|---|\n"
            f"| p | `teleport-train d=4` |\n\n| `teleport-train after_table=1` |\n")
    assert quick_commands(text) == [["teleport-train", "a=1"], ["teleport-train", "-m", "b=1,2", "c=3"],
                                    ["teleport-train", "d=4"]]


def test_the_readme_is_short_and_starts_with_what_it_is_and_the_two_commands():
    lines = README.splitlines()
    assert len(lines) <= 200
    head = "\n".join(lines[:15])
    assert "symmetry teleportation" in head and "arXiv 2205.10637" in head
    assert "make train" in head and "make test" in head


def test_the_readme_links_only_to_files_in_the_repository():
    targets = re.findall(r"\]\(([^)#\s]+)", README)
    assert targets, "no links found"
    for target in targets:
        if target.startswith(("http://", "https://")):
            continue
        assert not target.startswith(".."), f"{target} is outside the repository"
        assert (REPO / target).exists(), f"the README links to {target}, which does not exist"
    assert "../" not in README and "reference.md" not in README


def test_every_preset_has_a_quick_command():
    quick = {arg.split("=", 1)[1] for argv in quick_commands(README) for arg in argv if arg.startswith("experiment=")}
    presets = {p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml")}
    assert presets <= quick, f"presets without a quick command in the README: {sorted(presets - quick)}"


def data_root(tmp_path_factory, commands: list[list[str]]) -> Path:
    """The real data, or synthetic files with room for every command's problem.n_train and its validation split
    (a fixed 3000 refused `paper_mnist_adagrad problem.n_train=4800` on a machine without the real files)."""
    root = real_root()
    if root is None:
        largest = max((int(arg.split("=", 1)[1]) for argv in commands for arg in argv
                       if arg.startswith("problem.n_train=")), default=0)
        root = tmp_path_factory.mktemp("readme_data")
        for dataset in ("mnist", "fashion_mnist"):
            idx.write_synthetic(root, dataset, n_train=max(3000, 2 * largest), n_test=200)
    return root


# Runs commands through teleport-train's entry point, one after another in one process (what a shell would do,
# without paying torch's import for each): prints one JSON line per command, its exit code and output.
DRIVER = """
import contextlib, io, json, sys
from hydra.core.global_hydra import GlobalHydra
from teleport_runner.train import main
for argv in json.loads(sys.argv[1]):
    sys.argv, out, code = ["teleport-train", *argv], io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    GlobalHydra.instance().clear()
    print(json.dumps({"code": code, "output": out.getvalue()[-3000:]}), flush=True)
"""


def test_the_quick_commands_run_as_written(tmp_path, tmp_path_factory):
    commands = quick_commands(README)
    assert len(commands) >= 10
    env = {**os.environ, "TELEPORT_DATA_ROOT": str(data_root(tmp_path_factory, commands)), "WANDB_MODE": "offline",
           "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    outs = [tmp_path / f"cmd{i}" for i in range(len(commands))]
    argvs = [[*argv[1:], f"hydra.run.dir={out}", f"hydra.sweep.dir={out}"] for argv, out in zip(commands, outs)]

    def drive(share: list[list[str]]) -> list[dict]:
        proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(share)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"code"')]

    with ThreadPoolExecutor(2) as pool:  # two processes, every other command each
        halves = list(pool.map(drive, [argvs[0::2], argvs[1::2]]))
    results = [None] * len(commands)
    results[0::2], results[1::2] = halves
    for argv, out, result in zip(commands, outs, results):
        command = " ".join(argv)
        assert result["code"] == 0, f"{command} exited {result['code']}:\n{result['output']}"
        if "--help" in argv:
            assert "experiment: " in result["output"]
            continue
        if "--cfg" in argv:  # composes only (a preset whose data is not here, e.g. CIFAR-10)
            assert "problem:" in result["output"]
            continue
        summaries = [json.loads(p.read_text()) for p in sorted(out.glob("**/summary.json"))]
        assert summaries, f"{command} wrote no summary.json"
        assert all(s["status"] == "completed" for s in summaries), command
    assert not (tmp_path / "outputs").exists()  # every run went where it was told


def test_the_configuration_reference_is_up_to_date():
    """docs/configuration.md lists every group, option and key as the configs and constructors define them."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "config_reference.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = (REPO / "docs" / "configuration.md").read_text()
    for group in ("problem", "symmetry", "teleport", "optimizer", "schedule", "logger", "experiment"):
        for option in (Path(CONFIG_DIR) / group).glob("*.yaml"):
            assert f"| `{option.stem}` |" in doc, f"{group}={option.stem} is missing from docs/configuration.md"


def test_the_readme_example_runs(tmp_path):
    """The README's own-model example (the python block after `<!-- example -->`), run as written: every teleport is
    accepted and never lowers ||grad L||^2 on its batch (the solver keeps the best point on its path, the identity
    included), and most raise it."""
    block = README.split("<!-- example -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    proc = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [line.split() for line in proc.stdout.splitlines()]
    assert [e[0] for e in events] == ["5", "15", "25", "35"]
    assert all(e[-1] == "True" and float(e[3]) >= float(e[1]) for e in events), proc.stdout
    assert sum(float(e[3]) > 1.2 * float(e[1]) for e in events) >= 3, proc.stdout
