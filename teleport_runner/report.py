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
from pathlib import Path

import numpy as np

from .errors import UserError
from .report_runs import MISSING, Group, Run, baseline_for, find_runs, group_runs

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


def teleport_events(run: Run) -> list[dict]:
    """The run's accepted teleports (teleports.jsonl); torn or unreadable lines are skipped."""
    events = []
    try:
        lines = (run.path / "teleports.jsonl").read_text().splitlines()
    except OSError:
        return events
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("accepted"):
            events.append(event)
    return events


def grad_gain(run: Run) -> float:
    """Geometric mean over the accepted teleports of ||grad L||^2 after / before, on the teleport batch."""
    logs = [math.log(e["grad_norm_sq_after"] / e["grad_norm_sq_before"]) for e in teleport_events(run)
            if _num(e.get("grad_norm_sq_before")) > 0 and _num(e.get("grad_norm_sq_after")) > 0]
    return math.exp(sum(logs) / len(logs)) if logs else math.nan


def ms_per_teleport(run: Run) -> float:
    n = _num(run.summary.get("n_teleports"))
    return 1e3 * _num(run.summary.get("time_teleport_s")) / n if n > 0 else math.nan


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
    gain = mean_std(grad_gain(r) for r in ok)
    row["grad^2 gain"] = gain if gain == MISSING else f"x{gain}"
    row["ms / teleport"] = mean_std(ms_per_teleport(r) for r in ok)
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
             "(time_teleport_s / (time_descent_s / steps)); grad^2 gain = geometric mean of ||grad L||^2 after / "
             "before over the accepted teleports, on their batches.\n",
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
