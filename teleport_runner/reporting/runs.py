"""Runs on disk for ``teleport-report``: find them, group them by the settings that differ, name the groups.

A run is a directory with ``summary.json`` and, where Hydra wrote it, ``.hydra/config.yaml`` (the composed
config) and ``.hydra/hydra.yaml`` (the config-group options it was composed from). Groups are labelled as the
user would type the settings: ``teleport=none`` (the option, not the class), ``teleport.lr=0.1134``.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..config_tree import flatten, read_yaml, select
from ..errors import UserError
from ..logging.jsonl import read_jsonl

#: Config keys that never define a group: the seed pairs runs, the rest is bookkeeping.
IGNORED = ("seed", "resume", "checkpoint", "logger", "plots", "log_every", "device", "optimize_metric", "hydra")
MISSING = "-"


@dataclass
class Run:
    path: Path
    summary: dict
    config: dict  # flattened: {"teleport._target_": "...", "optimizer.lr": 0.08, ...}
    group: tuple = ()
    #: the config-group options Hydra composed the run from ({"teleport": "none", ...}, .hydra/hydra.yaml)
    choices: dict = field(default_factory=dict)
    #: the command-line overrides (.hydra/overrides.yaml)
    overrides: list = field(default_factory=list)
    #: the sweep's direction (Optuna: minimize or maximize; from .hydra/hydra.yaml)
    direction: str = "minimize"
    _teleports: list | None = field(default=None, repr=False)

    @property
    def seed(self):
        return self.summary.get("seed", self.config.get("seed"))

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "unknown"))

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def is_baseline(self) -> bool:
        return str(self.config.get("teleport._target_", "")).endswith("NoTeleport")

    @property
    def teleports(self) -> list[dict]:
        """teleports.jsonl (read once; a damaged file is one warning and counts as none)."""
        if self._teleports is None:
            try:
                self._teleports = read_jsonl(self.path / "teleports.jsonl")
            except Exception as exc:
                print(f"Warning: {self.path}: teleports.jsonl cannot be read ({exc}); its teleport costs are left "
                      "out.", file=sys.stderr)
                self._teleports = []
        return self._teleports


@dataclass
class Group:
    key: tuple
    label: str
    runs: list = field(default_factory=list)

    @property
    def ok_runs(self) -> list:
        return [r for r in self.runs if r.ok]


def find_runs(paths) -> list[Run]:
    """Every run under ``paths`` (run directories, sweep directories, or trees of them)."""
    runs, seen = [], set()
    for path in map(Path, paths):
        if path.is_file():
            raise UserError(f"teleport-report: {path} is a file; pass the run or sweep directories that hold "
                            "summary.json (outputs/runs/<time>, outputs/multirun/<time>).")
        if not path.exists():
            raise UserError(f"teleport-report: {path} does not exist. Pass run directories "
                            "(outputs/runs/<time>) or sweep directories (outputs/multirun/<time>).")
        found = [path / "summary.json"] if (path / "summary.json").exists() else sorted(path.rglob("summary.json"))
        for file in found:
            run_dir = file.parent.resolve()
            if run_dir in seen or "wandb" in run_dir.parts:
                continue
            seen.add(run_dir)
            try:
                runs.append(_read_run(run_dir))
            except Exception as exc:  # one damaged folder must not hide the others
                print(f"Warning: skipped {run_dir}: its files cannot be read ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''}).", file=sys.stderr)
    bare = [str(r.path) for r in runs if not r.config]
    if bare and len(bare) < len(runs):
        print(f"Warning: {len(bare)} run(s) have no .hydra/config.yaml ({', '.join(bare[:3])}"
              f"{', ...' if len(bare) > 3 else ''}): their settings are unknown, so they form their own group.",
              file=sys.stderr)
    if not runs:
        raise UserError(f"teleport-report: no readable summary.json under {', '.join(map(str, paths))}; nothing to "
                        "report. Pass the directories teleport-train wrote (outputs/runs/... or outputs/multirun/...).")
    return runs


def _read_run(run_dir: Path) -> Run:
    summary = json.loads((run_dir / "summary.json").read_text())
    if not isinstance(summary, dict):
        raise ValueError("summary.json is not a JSON object")

    def hydra_file(name):  # what Hydra recorded, or None where the file is not there
        path = run_dir / ".hydra" / name
        return read_yaml(path) if path.exists() else None

    config, overrides, hydra = hydra_file("config.yaml"), hydra_file("overrides.yaml"), hydra_file("hydra.yaml")
    run = Run(run_dir, summary, flatten(config or {}), choices=_choices(hydra),
              overrides=[str(o) for o in overrides or []])
    direction = select(hydra, "hydra.sweeper.direction")
    run.direction = str(direction[0] if isinstance(direction, list) else direction or "minimize")
    return run


def _choices(hydra) -> dict:
    """The option of each config group the run was composed from, as Hydra recorded it (empty if unknown)."""
    choices = select(hydra, "hydra.runtime.choices") or {}
    return {str(k): str(v) for k, v in choices.items() if v is not None}


def _ignored(key: str) -> bool:
    return key.split(".")[0] in IGNORED


#: Settings a run without teleport never reads: they do not separate baseline groups (``teleport=none`` with the
#: ``teleport.samples`` a preset left behind is the same baseline).
BASELINE_IGNORES = ("teleport.", "symmetry.", "schedule.")


def _grouping_config(run: Run) -> dict:
    if not run.is_baseline:
        return run.config
    return {k: v for k, v in run.config.items() if not k.startswith(BASELINE_IGNORES) or k == "teleport._target_"}


def group_runs(runs: list[Run]) -> list[Group]:
    """Group by the config values that differ between runs (seed and bookkeeping keys aside; for runs without
    teleport, also the teleport, symmetry and schedule settings they never read)."""
    configs = {id(r): _grouping_config(r) for r in runs}
    keys = sorted({k for r in runs for k in configs[id(r)] if not _ignored(k)})
    varying = [k for k in keys if len({repr(configs[id(r)].get(k, MISSING)) for r in runs}) > 1]
    for r in runs:
        r.group = tuple((k, configs[id(r)].get(k, MISSING)) for k in varying)
    groups: dict[tuple, Group] = {}
    for r in runs:
        groups.setdefault(r.group, Group(r.group, "")).runs.append(r)
    shown = _label_keys(runs, varying)
    names = _option_names(runs, [k for k in shown if k.endswith("._target_")]) | _float_texts(runs, shown)
    for g in groups.values():
        parts = [f"{_short_key(k)}={names.get((k, repr(v))) or _short_value(v)}" for k, v in g.key
                 if k in shown and v is not MISSING]
        g.label = ", ".join(parts) or "all runs"
    return sorted(groups.values(), key=lambda g: (not g.runs[0].is_baseline, g.label))


def _label_keys(runs, varying) -> set:
    """The keys that separate groups: drop those implied by a varying ``<group>._target_`` (a solver's own
    settings), and those that vary only because runs without teleport do not read them."""
    targets = {k.rsplit(".", 1)[0] for k in varying if k.endswith("._target_")}
    teleporting = [r for r in runs if not r.is_baseline]
    shown = set()
    for k in varying:
        if k.startswith(BASELINE_IGNORES) and k != "teleport._target_" and len(
                {repr(r.config.get(k, MISSING)) for r in teleporting}) <= 1:
            continue
        node = k.rsplit(".", 1)[0] if "." in k else ""
        if node in targets and not k.endswith("._target_"):
            by_target: dict = {}
            for r in runs:
                by_target.setdefault(repr(r.config.get(f"{node}._target_")), set()).add(repr(r.config.get(k, MISSING)))
            if all(len(v) == 1 for v in by_target.values()):
                continue
        shown.add(k)
    return shown


def _option_names(runs, target_keys) -> dict:
    """{(key, repr(target)): option} for each varying ``<group>._target_`` whose targets and the config-group options
    Hydra composed them from match one to one (``teleport=none`` rather than the class name ``NoTeleport``, as the
    user typed it); other targets keep their class name."""
    names = {}
    for key in target_keys:
        group = _short_key(key)
        pairs = {(repr(r.config.get(key, MISSING)), r.choices.get(group)) for r in runs}
        targets, options = {t for t, _ in pairs}, {o for _, o in pairs}
        if None not in options and len(pairs) == len(targets) == len(options):
            names.update({(key, t): o for t, o in pairs})
    return names


def _float_texts(runs, keys) -> dict:
    """{(key, repr(value)): text} for float values, with the fewest significant digits (4, 6, 8, else all) that
    keep the key's values apart: an Optuna sweep's teleport.lr=0.1134, not 0.11336766867014442."""
    texts = {}
    for key in keys:
        values = {r.config.get(key) for r in runs}
        floats = {v for v in values if isinstance(v, float)}
        for digits in (4, 6, 8, None):
            shown = {v: repr(v) if digits is None else f"{v:.{digits}g}" for v in floats}
            if len(set(shown.values())) == len(floats):
                texts.update({(key, repr(v)): text for v, text in shown.items()})
                break
    return texts


def _short_key(key: str) -> str:
    return key[: -len("._target_")] if key.endswith("._target_") else key


def _short_value(value) -> str:
    text = str(value)
    return text.rsplit(".", 1)[-1] if "." in text and text.replace(".", "").replace("_", "").isalnum() \
        and not text.replace(".", "").isdigit() else text


def baseline_for(group: Group, groups: list[Group]) -> Group | None:
    """The no-teleport group with the same settings apart from those a run without teleport never reads."""
    if group.runs[0].is_baseline:
        return None
    mine = {k: v for k, v in group.key if not k.startswith(BASELINE_IGNORES)}
    match = [b for b in groups if b.runs[0].is_baseline
             and {k: v for k, v in b.key if not k.startswith(BASELINE_IGNORES)} == mine]
    return match[0] if match else None


def duplicate_seeds(group: Group) -> dict:
    """{seed: [run paths]} for seeds that appear more than once in a group (reported, never pooled silently;
    the paired comparison leaves those seeds out)."""
    by_seed: dict = {}
    for r in group.runs:
        by_seed.setdefault(r.seed, []).append(str(r.path))
    return {seed: paths for seed, paths in by_seed.items() if len(paths) > 1}


def optuna_order(groups: list[Group]) -> tuple[list[Group], Group | None, str | None]:
    """For an Optuna sweep (hydra/sweeper=optuna in the runs' Hydra config): the groups sorted by the sweep's
    objective (median over the group's completed runs, the sweep's direction) and the best one; otherwise the
    groups as they are, None, None."""
    runs = [r for g in groups for r in g.runs]
    if not runs or not all(r.choices.get("hydra/sweeper") == "optuna" for r in runs):
        return groups, None, None
    from ..objective import objective
    from .stats import describe

    metric = str(runs[0].config.get("optimize_metric", "final_loss"))
    direction = runs[0].direction
    sign = -1.0 if "max" in direction else 1.0

    def score(g: Group) -> float:
        d = describe(objective(r.summary, metric, direction) for r in g.runs)
        return sign * d["median"] if d["n"] else float("inf")

    ordered = sorted(groups, key=score)
    return ordered, ordered[0], f"{metric} ({direction})"
