"""The statistics of runs, one definition each, shared by the console, ``report.md``, ``report.json`` and the
sweep metric (``objective.py``).

Final losses and their ratios span orders of magnitude across seeds, so the default summary is the median with
the range (min-max), and the interquartile range from 5 runs on; ratios are summarized by their geometric mean.
``style="mean"`` gives mean ± std (the paper's figure 3), as an option. Every summary carries ``n``.
"""
from __future__ import annotations

import math

import numpy as np

MISSING = "-"
STYLES = ("median", "mean")
IQR_FROM = 5  # runs needed before an interquartile range means something
#: A run that rejects more than this share of its teleports is flagged (its teleports mostly did not happen).
REJECTED_WARN = 0.2


def number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def finite(values) -> list[float]:
    return [v for v in map(number, values) if math.isfinite(v)]


def describe(values) -> dict:
    """{n, median, min, max, mean, std, q1, q3} over the finite values (q1/q3 None under 5 values, std None
    under 2); {n: 0} when there are none."""
    xs = finite(values)
    if not xs:
        return {"n": 0}
    a = np.asarray(xs, dtype=float)
    out = {"n": len(xs), "median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()),
           "mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(xs) > 1 else None, "q1": None, "q3": None}
    if len(xs) >= IQR_FROM:
        out["q1"], out["q3"] = (float(q) for q in np.percentile(a, [25, 75]))
    return out


def describe_ratios(values) -> dict:
    """``describe`` plus ``geomean`` over the positive finite ratios; ``n_extreme`` counts the ratios left out of
    it (0 or inf: a run that reached a zero loss)."""
    values = list(values)
    positive = [x for x in finite(values) if x > 0]
    out = describe(values)
    out["geomean"] = float(math.exp(sum(map(math.log, positive)) / len(positive))) if positive else None
    out["n_extreme"] = len(values) - len(positive)
    return out


def fmt(d: dict, style: str = "median", ratio: bool = False) -> str:
    """One cell: ``median [min, max]`` (with ``IQR q1-q3`` from 5 runs), ``x geomean [min, max]`` for ratios,
    or ``mean ± std``; a single run is its value."""
    if not d or not d.get("n"):
        return MISSING
    g = lambda v: f"{v:.4g}"  # noqa: E731
    if d["n"] == 1:
        return ("x" if ratio else "") + g(d["min"])
    if style == "mean":
        return ("x" if ratio else "") + f"{g(d['mean'])} ± {d['std']:.2g}"
    centre = d.get("geomean") if ratio and d.get("geomean") is not None else d["median"]
    text = ("x" if ratio else "") + f"{g(centre)} [{g(d['min'])}, {g(d['max'])}]"
    if d.get("q1") is not None:
        text += f" IQR {g(d['q1'])}-{g(d['q3'])}"
    return text


def header(style: str) -> str:
    if style == "mean":
        return "mean ± std over seeds (paired ratios: mean ± std)"
    return ("median [min, max] over seeds, with the interquartile range from 5 runs on (paired ratios: geometric "
            "mean [min, max])")


# ---- per-run quantities ---------------------------------------------------------------------------------------

def steps_to(summary: dict, threshold: str) -> tuple[float, bool]:
    """(steps to the loss threshold, reached?): a run that never got below it counts as ``steps + 1``, worse than
    every run that did (the sweep metric uses the same rule)."""
    table = summary.get("steps_to_loss") or {}
    key = next((k for k in table if number(k) == number(threshold)), None)
    value = table.get(key) if key is not None else None
    if value is None:
        return float(summary.get("steps", 0)) + 1, False
    return float(value), True


def tracks(summary: dict, threshold: str) -> bool:
    """Whether the run measured the steps to ``threshold`` (its loss_thresholds held it)."""
    return any(number(k) == number(threshold) for k in (summary.get("steps_to_loss") or {}))


def descent_step_s(summary: dict) -> float:
    steps = number(summary.get("steps_done", summary.get("steps")))
    descent = number(summary.get("time_descent_s"))
    return descent / steps if steps and descent > 0 else math.nan


def teleport_costs(summary: dict, teleports: list[dict]) -> dict:
    """Per teleport: seconds (the median over the run's teleports, so the first call's warm-up is not charged
    to a teleport) and that in descent steps of the same run (seconds / mean descent step)."""
    times = finite(t.get("time_s") for t in teleports)
    if not times:
        return {"teleport_s": math.nan, "teleport_steps": math.nan}
    per = float(np.median(times))
    return {"teleport_s": per, "teleport_steps": per / descent_step_s(summary)}


def grad_gain(teleports: list[dict]) -> float:
    """Geometric mean over a run's accepted teleports of ||grad L||^2 after / before (on their batches)."""
    logs = [math.log(a / b) for t in teleports if t.get("accepted")
            for a, b in [(number(t.get("grad_norm_sq_after")), number(t.get("grad_norm_sq_before")))]
            if a > 0 and b > 0 and math.isfinite(a / b)]
    return math.exp(sum(logs) / len(logs)) if logs else math.nan


def rejected_share(summary: dict) -> float:
    n = number(summary.get("n_teleports"))
    return number(summary.get("n_teleports_rejected")) / n if n and n > 0 else 0.0


def pearson(xs, ys) -> dict:
    """Pearson's r of paired values (pairs with a non-finite member dropped), with n and the two-sided p-value of
    r = 0 (Student's t with n - 2 degrees of freedom, as scipy.stats.pearsonr); r and p are None under 3 pairs or
    when either side is constant."""
    pairs = [(x, y) for x, y in zip(map(number, xs), map(number, ys)) if math.isfinite(x) and math.isfinite(y)]
    out = {"n": len(pairs), "r": None, "p": None}
    if len(pairs) < 3:
        return out
    x, y = (np.array(v, dtype=np.float64) for v in zip(*pairs))
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    if denom == 0.0:
        return out
    r = max(-1.0, min(1.0, float(x @ y) / denom))
    df = len(pairs) - 2
    # P(|T| >= |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2), with df / (df + t^2) = 1 - r^2
    out.update(r=r, p=regularized_beta(1.0 - r * r, df / 2.0, 0.5))
    return out


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularized incomplete beta function (continued fraction, modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the continued fraction converges fast on this side only
        return 1.0 - regularized_beta(1.0 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return math.exp(log_front) * h / a
