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

from omegaconf import OmegaConf

from .config_tree import flatten
from .errors import UserError

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
    if not runs:
        raise UserError(f"teleport-report: no readable summary.json under {', '.join(map(str, paths))}; nothing to "
                        "report. Pass the directories teleport-train wrote (outputs/runs/... or outputs/multirun/...).")
    return runs


def _read_run(run_dir: Path) -> Run:
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg_file = run_dir / ".hydra" / "config.yaml"
    config = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=False) if cfg_file.exists() else {}
    return Run(run_dir, summary, flatten(config), choices=_choices(run_dir / ".hydra" / "hydra.yaml"))


def _choices(hydra_file: Path) -> dict:
    """The option of each config group the run was composed from, as Hydra recorded it (empty if unknown)."""
    if not hydra_file.exists():
        return {}
    choices = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.choices", default=None) or {}
    return {str(k): str(v) for k, v in choices.items() if v is not None}


def _ignored(key: str) -> bool:
    return key.split(".")[0] in IGNORED


def group_runs(runs: list[Run]) -> list[Group]:
    """Group by the config values that differ between runs (seed and bookkeeping keys aside)."""
    keys = sorted({k for r in runs for k in r.config if not _ignored(k)})
    varying = [k for k in keys if len({repr(r.config.get(k, MISSING)) for r in runs}) > 1]
    for r in runs:
        r.group = tuple((k, r.config.get(k, MISSING)) for k in varying)
    groups: dict[tuple, Group] = {}
    for r in runs:
        groups.setdefault(r.group, Group(r.group, "")).runs.append(r)
    shown = _label_keys(runs, varying)
    names = _option_names(runs, [k for k in shown if k.endswith("._target_")]) | _float_texts(runs, shown)
    for g in groups.values():
        parts = [f"{_short_key(k)}={names.get((k, repr(v))) or _short_value(v)}" for k, v in g.key if k in shown]
        g.label = ", ".join(parts) or "all runs"
    return sorted(groups.values(), key=lambda g: (not g.runs[0].is_baseline, g.label))


def _label_keys(runs, varying) -> set:
    """Drop from labels the keys implied by a varying ``<group>._target_`` (a solver's own settings)."""
    targets = {k.rsplit(".", 1)[0] for k in varying if k.endswith("._target_")}
    shown = set()
    for k in varying:
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
    """The no-teleport group with the same non-teleport settings (schedule ignored if nothing matches)."""
    if group.runs[0].is_baseline:
        return None
    bases = [g for g in groups if g.runs[0].is_baseline]
    for skip in (("teleport",), ("teleport", "schedule")):
        mine = {k: v for k, v in group.key if k.split(".")[0] not in skip}
        match = [b for b in bases if {k: v for k, v in b.key if k.split(".")[0] not in skip} == mine]
        if match:
            return match[0]
    return None


# ---- numbers -------------------------------------------------------------------------------------------------
