"""``teleport-report PATH...``: compare runs across seeds and settings, from their files alone.

Finds every ``summary.json`` under the given run or sweep directories, reads each run's composed config
(``.hydra/config.yaml``), and groups runs by the config values that differ between them (the seed and
bookkeeping keys aside). Per group: the final loss, steps to each loss threshold, validation metrics, time,
accepted/rejected teleports and the cost of one teleport (seconds, and descent steps of the same run); each
teleport group is paired seed by seed with the no-teleport group that has the same other settings. Statistics:
``stats.py`` (median [min, max] by default, ``--stat mean`` for mean ± std). Runs that failed, diverged or
were interrupted are listed and left out of the statistics.

Writes ``report.md``, ``report.json`` (the same numbers as data) and the figures ``report_*.png`` into the
first path given (or ``--out``), and prints the tables.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .runs import baseline_for, find_runs, group_runs, optuna_order
from .stats import STYLES, header
from .tables import (group_stats, markdown_table, paired_row, paired_stats, print_table, result_row, thresholds,
                     warnings_for)

#: Labels longer than this are replaced by short names (A, B, ...) with a legend table.
LONG_LABEL = 48


def _shorten(groups) -> list[dict]:
    """Give groups short names when any label is long; returns the legend rows ([] when none needed)."""
    if max(len(g.label) for g in groups) <= LONG_LABEL:
        return []
    legend = []
    for i, g in enumerate(groups):
        name = chr(ord("A") + i) if i < 26 else f"G{i + 1}"
        legend.append({"name": name, "settings": g.label})
        g.label = name
    return legend


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def build_report(paths, out: Path | None = None, figures: bool = True, style: str = "median") -> dict:
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}")
    paths = [Path(p) for p in paths]
    out = Path(out) if out is not None else paths[0]
    runs = find_runs(paths)
    groups = group_runs(runs)
    groups, best, objective = optuna_order(groups)
    legend = _shorten(groups)
    ts = thresholds(runs)
    val_keys = sorted({k for r in runs if r.ok for k in (r.summary.get("final_metrics") or {})})
    stats = [group_stats(g, ts, val_keys) for g in groups]
    paired = [p for g in groups if (b := baseline_for(g, groups)) is not None
              for p in [paired_stats(g, b, ts)] if p is not None]
    results = [result_row(s, ts, val_keys, style, best=g is best) for s, g in zip(stats, groups)]
    paired_rows = [paired_row(p, style) for p in paired]
    notes = warnings_for(stats)
    listing = [{"run": str(r.path), "group": g.label, "seed": r.seed, "status": r.status,
                "final loss": f"{r.summary.get('final_loss')}", "message": r.summary.get("message") or ""}
               for g in groups for r in g.runs]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if figures:
        from .figures import draw_figures

        written = draw_figures(groups, out, style=style)
    (out / "report.json").write_text(json.dumps(_json_safe({
        "statistic": style, "describes": header(style), "paths": [str(p) for p in paths],
        "thresholds": ts, "objective": objective, "best": best.label if best else None,
        "legend": legend, "groups": stats, "paired": paired, "warnings": notes}), indent=1) + "\n")
    (out / "report.md").write_text(_markdown(paths, runs, groups, style, objective, legend, results, paired_rows,
                                             notes, listing, written))
    title = f"teleport_runner report: {header(style).split(' (')[0]}"
    print_table(title + (f"; sorted by {objective}, ★ best" if objective else ""), results)
    if legend:
        print_table("groups", legend)
    print_table("paired against no teleport (same seeds)", paired_rows)
    for line in notes:
        print(f"Warning: {line}")
    for r in listing:
        if r["status"] != "completed":
            print(f"{r['status'].upper()}: {r['run']} ({r['message']})")
    print(f"Wrote {out / 'report.md'}, {out / 'report.json'}" + (f" and {len(written)} figures" if written else ""))
    return {"runs": runs, "groups": groups, "results": results, "paired": paired_rows, "stats": stats,
            "figures": written}


def _markdown(paths, runs, groups, style, objective, legend, results, paired_rows, notes, listing, written) -> str:
    lines = [f"# teleport_runner report\n\n{len(runs)} runs in {len(groups)} groups, from "
             f"{', '.join(map(str, paths))}. Statistics over the completed runs of each group: {header(style)}; "
             "(k/n) = runs that reached the loss threshold. Per teleport: the median over a run's teleports of "
             "its seconds, and that in descent steps of the same run (a run's first teleport pays the warm-up; "
             "the median leaves it out).\n"]
    if objective:
        lines.append(f"Optuna sweep: groups sorted by {objective}; ★ marks the best.\n")
    lines += ["## Results\n", markdown_table(results)]
    if legend:
        lines += ["## Groups\n", markdown_table(legend)]
    if notes:
        lines += ["## Warnings\n"] + [f"- {n}" for n in notes] + [""]
    lines += ["## Paired against no teleport (same seed)\n",
              "Speed-up = baseline steps to the threshold / the group's, per seed; a run that never reached it "
              "counts as steps + 1 (>= / <=: a bound). Final loss ratio = baseline / group.\n",
              markdown_table(paired_rows) if paired_rows else "(no group without teleport to pair with)\n"]
    bad = [r for r in listing if r["status"] != "completed"]
    if bad:
        lines += ["## Runs that did not complete\n", markdown_table(bad)]
    lines += ["## Figures\n"] + [f"![{p.stem}]({p.name})\n" for p in written]
    lines += ["## All runs\n", markdown_table(listing)]
    return "\n".join(lines)
