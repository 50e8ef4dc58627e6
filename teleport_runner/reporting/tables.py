"""The report's numbers as data (``report.json``) and as tables (``report.md`` and the console).

``group_stats`` and ``paired_stats`` compute everything once, as plain data; the table rows are formatted from
that data, so the console, ``report.md`` and ``report.json`` never disagree.
"""
from __future__ import annotations

import math

from .runs import Group, duplicate_seeds
from .stats import (MISSING, REJECTED_WARN, describe, describe_ratios, fmt, grad_gain, number, rejected_share,
                    steps_to, teleport_costs, tracks)


def thresholds(runs) -> list[str]:
    keys = {k for r in runs for k in (r.summary.get("steps_to_loss") or {})}
    return sorted(keys, key=lambda k: -float(k))


def _count(summary: dict, key: str) -> int:
    value = number(summary.get(key))
    return int(value) if math.isfinite(value) else 0


def group_stats(group: Group, ts: list[str], val_keys: list[str]) -> dict:
    """Everything the report says about one group, as plain data."""
    ok = group.ok_runs
    statuses: dict = {}
    for r in group.runs:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    costs = [teleport_costs(r.summary, r.teleports) for r in ok]
    metrics = {"final_loss": describe(r.summary.get("final_loss") for r in ok),
               "time_total_s": describe(r.summary.get("time_total_s") for r in ok),
               "n_teleports": describe(r.summary.get("n_teleports") for r in ok),
               "n_teleports_rejected": describe(r.summary.get("n_teleports_rejected") for r in ok),
               "teleport_s": describe(c["teleport_s"] for c in costs),
               "teleport_steps": describe(c["teleport_steps"] for c in costs),
               "grad_norm_sq_gain": describe_ratios(grad_gain(r.teleports) for r in ok)}
    for t in ts:  # only the runs that tracked the threshold: a run without it did not "not reach" it
        reached = [steps_to(r.summary, t) for r in ok if tracks(r.summary, t)]
        metrics[f"steps_to_loss/{t}"] = dict(describe(s for s, hit in reached if hit),
                                             reached=sum(hit for _, hit in reached), tracked=len(reached))
    for k in val_keys:
        metrics[f"final_metrics/{k}"] = describe((r.summary.get("final_metrics") or {}).get(k) for r in ok)
    return {
        "label": group.label, "settings": {k: v for k, v in group.key}, "statuses": statuses,
        "n": len(group.runs), "n_completed": len(ok),
        "accepted": sum(_count(r.summary, "n_teleports") - _count(r.summary, "n_teleports_rejected")
                        for r in group.runs),
        "rejected": sum(_count(r.summary, "n_teleports_rejected") for r in group.runs),
        "many_rejected": [str(r.path) for r in group.runs if rejected_share(r.summary) > REJECTED_WARN],
        "duplicate_seeds": {str(k): v for k, v in duplicate_seeds(group).items()},
        "runs": [{"path": str(r.path), "seed": r.seed, "status": r.status, "overrides": r.overrides,
                  "final_loss": number(r.summary.get("final_loss"))} for r in group.runs],
        "metrics": metrics,
    }


def paired_stats(group: Group, base: Group, ts: list[str]) -> dict | None:
    """Seed-by-seed comparison with the baseline group: speed-up = baseline steps / the group's steps to each
    threshold (a run that never reached it counts as steps + 1: the ratio is then a bound), final-loss ratio =
    baseline / group. Seeds duplicated in either group are left out (and reported)."""
    dup = set(duplicate_seeds(group)) | set(duplicate_seeds(base))
    mine = {r.seed: r for r in group.ok_runs if r.seed not in dup}
    theirs = {r.seed: r for r in base.ok_runs if r.seed not in dup}
    seeds = sorted(set(mine) & set(theirs), key=str)
    if not seeds:
        return None
    out = {"group": group.label, "baseline": base.label, "seeds": seeds, "comparisons": {}}
    for t in ts:
        ratios, bound, any_hit = [], "", False
        for s in seeds:
            if not (tracks(theirs[s].summary, t) and tracks(mine[s].summary, t)):
                continue
            (b, b_hit), (g, g_hit) = steps_to(theirs[s].summary, t), steps_to(mine[s].summary, t)
            ratios.append(b / max(g, 1.0))
            any_hit |= b_hit or g_hit
            bound = ">= " if not b_hit and g_hit else "<= " if b_hit and not g_hit else bound
        if any_hit:
            out["comparisons"][f"speedup/{t}"] = dict(describe_ratios(ratios), bound=bound.strip() or None)
    losses = [(number(theirs[s].summary.get("final_loss")), number(mine[s].summary.get("final_loss"))) for s in seeds]
    out["comparisons"]["final_loss_ratio"] = describe_ratios(b / g if g > 0 else math.inf for b, g in losses)
    return out


# ---- rows for the tables ---------------------------------------------------------------------------------------

def result_row(stats: dict, ts: list[str], val_keys: list[str], style: str, best: bool = False) -> dict:
    m = stats["metrics"]
    bad = {s: n for s, n in stats["statuses"].items() if s != "completed"}
    runs = f"{stats['n_completed']}/{stats['n']}" + (
        f" ({', '.join(f'{n} {s}' for s, n in sorted(bad.items()))})" if bad else "")
    row = {"group": ("★ " if best else "") + stats["label"], "runs": runs, "final loss": fmt(m["final_loss"], style)}
    for t in ts:
        d = m[f"steps_to_loss/{t}"]
        row[f"steps to {t}"] = (f"{fmt(d, style)} ({d['reached']}/{d['tracked']})" if d["tracked"]
                                else "not measured" if stats["n_completed"] else MISSING)
    for k in val_keys:
        row[k] = fmt(m[f"final_metrics/{k}"], style)
    row["time s"] = fmt(m["time_total_s"], style)
    row["teleports acc/rej"] = f"{stats['accepted']}/{stats['rejected']}" if stats["accepted"] + stats["rejected"] \
        else MISSING
    row["‖∇L‖² gain"] = fmt(m["grad_norm_sq_gain"], style, ratio=True)
    row["s per teleport"] = fmt(m["teleport_s"], style)
    row["descent steps per teleport"] = fmt(m["teleport_steps"], style)
    return row


def paired_row(p: dict, style: str) -> dict:
    row = {"group": p["group"], "baseline": p["baseline"], "seeds": str(len(p["seeds"]))}
    for key, d in p["comparisons"].items():
        name = "final loss ratio" if key == "final_loss_ratio" else f"speed-up to {key.split('/', 1)[1]}"
        row[name] = (f"{d['bound']} " if d.get("bound") else "") + fmt(d, style, ratio=True)
    return row


def warnings_for(all_stats: list[dict]) -> list[str]:
    """Lines for the console and report.md: many rejected teleports, duplicate seeds."""
    lines = []
    for s in all_stats:
        if s["many_rejected"]:
            lines.append(f"{s['label']}: {len(s['many_rejected'])} run(s) rejected more than a fifth of their "
                         f"teleports ({s['rejected']} of {s['accepted'] + s['rejected']} in the group): those "
                         "teleports were rolled back; in float32 near a zero loss use dtype=float64.")
        for seed, paths in s["duplicate_seeds"].items():
            lines.append(f"{s['label']}: seed {seed} appears {len(paths)} times ({', '.join(paths)}); the "
                         "statistics count each run, the paired comparison leaves that seed out.")
    return lines


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(none)\n"
    cols = list(dict.fromkeys(c for r in rows for c in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, MISSING)).replace("|", "/") for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def print_table(title: str, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if not rows:
        return
    table = Table(title=Text(title))  # Text: brackets such as "[min, max]" are data, not rich markup
    cols = list(dict.fromkeys(c for r in rows for c in r))
    for c in cols:
        table.add_column(Text(c), overflow="fold")
    for r in rows:
        table.add_row(*(Text(str(r.get(c, MISSING))) for c in cols))
    console = Console()
    if not console.is_terminal:  # piped or in a log file: do not wrap at 80 columns
        console = Console(width=200)
    console.print(table)
