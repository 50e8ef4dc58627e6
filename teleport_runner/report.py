"""``teleport-report PATH...``: compare runs across seeds and settings, from their files alone.

Finds every ``summary.json`` under the given run or sweep directories, reads each run's composed config
(``.hydra/config.yaml``), and groups runs by the config values that differ between them (the seed and
bookkeeping keys such as logger, checkpoint and plots aside). Per group: mean ± std over seeds of the final
loss, of the steps to each loss threshold, of the validation metrics, of the time, and the teleport cost in
descent-step equivalents. Each teleport group is paired seed by seed with the no-teleport group that has
the same other settings: speed-up = baseline steps to a threshold / the group's (a run that never reached
the threshold counts as ``steps + 1`` and the value is marked ``>=`` or ``<=``), and the final-loss ratio
baseline / group. Runs that failed, diverged or were interrupted are listed and left out of the means.

Writes ``report.md`` and the figures ``report_*.png`` (see ``report_figures``) and prints the tables.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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
            summary = json.loads(file.read_text())
            cfg_file = run_dir / ".hydra" / "config.yaml"
            config = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=False) if cfg_file.exists() else {}
            runs.append(Run(run_dir, summary, flatten(config), choices=_choices(run_dir / ".hydra" / "hydra.yaml")))
    if not runs:
        raise UserError(f"teleport-report: no summary.json under {', '.join(map(str, paths))}; nothing to report. "
                        "Pass the directories teleport-train wrote (outputs/runs/... or outputs/multirun/...).")
    return runs


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

def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def mean_std(values) -> str:
    values = [v for v in map(_num, values) if math.isfinite(v)]
    if not values:
        return MISSING
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{np.mean(values):.4g} ± {np.std(values, ddof=1):.2g}"


def thresholds(runs: list[Run]) -> list[str]:
    keys = {k for r in runs for k in (r.summary.get("steps_to_loss") or {})}
    return sorted(keys, key=lambda k: -float(k))


def steps_to(run: Run, threshold: str) -> tuple[float, bool]:
    """(steps to the threshold, reached?); never reached counts as steps + 1."""
    value = (run.summary.get("steps_to_loss") or {}).get(threshold)
    if value is None:
        return float(run.summary.get("steps", 0)) + 1, False
    return float(value), True


def teleport_cost(run: Run) -> float:
    """Teleport time in descent-step equivalents: time_teleport_s / (time_descent_s / steps)."""
    steps = _num(run.summary.get("steps_done", run.summary.get("steps")))
    descent = _num(run.summary.get("time_descent_s"))
    if not steps or not descent > 0:
        return math.nan
    return _num(run.summary.get("time_teleport_s")) / (descent / steps)


def group_row(group: Group, ts: list[str], val_keys: list[str]) -> dict:
    ok = group.ok_runs
    statuses = {}
    for r in group.runs:
        if not r.ok:  # failed, diverged, interrupted: counted and named, never silently dropped
            statuses[r.status] = statuses.get(r.status, 0) + 1
    status = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    row = {"group": group.label, "runs": f"{len(ok)}/{len(group.runs)}" + ("" if len(ok) == len(group.runs)
                                                                          else f" ({status})"),
           "final loss": mean_std(r.summary.get("final_loss") for r in ok)}
    for t in ts:
        reached = [steps_to(r, t) for r in ok]
        hits = [s for s, hit in reached if hit]
        row[f"steps to {t}"] = f"{mean_std(hits)} ({len(hits)}/{len(ok)})" if ok else MISSING
    for k in val_keys:
        row[k] = mean_std((r.summary.get("final_metrics") or {}).get(k) for r in ok)
    row["time s"] = mean_std(r.summary.get("time_total_s") for r in ok)
    row["teleports"] = mean_std(r.summary.get("n_teleports") for r in ok)
    row["teleport cost (steps)"] = mean_std(teleport_cost(r) for r in ok)
    return row


def paired_row(group: Group, base: Group, ts: list[str]) -> dict | None:
    mine = {r.seed: r for r in group.ok_runs}
    theirs = {r.seed: r for r in base.ok_runs}
    seeds = sorted(set(mine) & set(theirs), key=str)
    if not seeds:
        return None
    row = {"group": group.label, "baseline": base.label, "seeds": str(len(seeds))}
    for t in ts:
        ratios, bound = [], ""
        for s in seeds:
            (b, b_hit), (g, g_hit) = steps_to(theirs[s], t), steps_to(mine[s], t)
            ratios.append(b / max(g, 1.0))
            if not b_hit and g_hit:
                bound = ">= "
            elif b_hit and not g_hit:
                bound = "<= "
        row[f"speed-up to {t}"] = MISSING if all(not steps_to(theirs[s], t)[1] and not steps_to(mine[s], t)[1]
                                                  for s in seeds) else f"{bound}x{mean_std(ratios)}"
    ratios = [_num(theirs[s].summary.get("final_loss")) / _num(mine[s].summary.get("final_loss"))
              if _num(mine[s].summary.get("final_loss")) > 0 else math.inf for s in seeds]
    row["final loss ratio"] = f"x{mean_std(ratios)}"
    return row


# ---- output --------------------------------------------------------------------------------------------------

def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(none)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, MISSING)).replace("|", "/") for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def print_table(title: str, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        return
    table = Table(title=title)
    for c in rows[0]:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(str(r.get(c, MISSING)) for c in rows[0]))
    console = Console()
    if not console.is_terminal:  # piped or in a log file: do not wrap at 80 columns
        console = Console(width=200)
    console.print(table)


def build_report(paths, out: Path, figures: bool = True) -> dict:
    runs = find_runs(paths)
    groups = group_runs(runs)
    ts = thresholds(runs)
    val_keys = sorted({k for r in runs if r.ok for k in (r.summary.get("final_metrics") or {})})
    results = [group_row(g, ts, val_keys) for g in groups]
    paired = [row for g in groups if (b := baseline_for(g, groups)) is not None
              for row in [paired_row(g, b, ts)] if row is not None]
    listing = [{"run": str(r.path), "group": g.label, "seed": r.seed, "status": r.status,
                "final loss": f"{_num(r.summary.get('final_loss')):.4g}",
                "message": r.summary.get("message") or ""} for g in groups for r in g.runs]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if figures:
        from .report_figures import draw_figures

        written = draw_figures(groups, out)
    lines = [f"# teleport_runner report\n\n{len(runs)} runs in {len(groups)} groups, from "
             f"{', '.join(map(str, paths))}. Mean ± std over seeds of the completed runs; (k/n) = runs that "
             "reached the loss threshold. Teleport cost = teleport time in descent-step equivalents "
             "(time_teleport_s / (time_descent_s / steps)).\n",
             "## Results\n", markdown_table(results),
             "## Paired against no teleport (same seed)\n",
             "Speed-up = baseline steps to the threshold / the group's, per seed, then mean ± std; a run that "
             "never reached it counts as steps + 1 (>= / <=: a bound). Final loss ratio = baseline / group.\n",
             markdown_table(paired) if paired else "(no group without teleport to pair with)\n"]
    bad = [r for r in listing if r["status"] != "completed"]
    if bad:
        lines += ["## Runs that did not complete\n", markdown_table(bad)]
    lines += ["## Figures\n"] + [f"![{p.stem}]({p.name})\n" for p in written]
    lines += ["## All runs\n", markdown_table(listing)]
    (out / "report.md").write_text("\n".join(lines))
    print_table("teleport_runner report: mean ± std over seeds", results)
    print_table("paired against no teleport (same seeds)", paired)
    for r in bad:
        print(f"{r['status'].upper()}: {r['run']} ({r['message']})")
    print(f"Wrote {out / 'report.md'}" + (f" and {len(written)} figures" if written else ""))
    return {"runs": runs, "groups": groups, "results": results, "paired": paired, "figures": written}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="teleport-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run or sweep directories (searched for summary.json)")
    parser.add_argument("--out", help="where report.md and the figures go (default: the directory given, "
                                      "or ./report for several)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.paths[0]) if len(args.paths) == 1 else Path("report")
    try:
        build_report(args.paths, out, figures=not args.no_figures)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
