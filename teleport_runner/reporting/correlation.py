"""The 2024 follow-up's correlation study (arXiv 2305.13404, Table 1): sharpness phi and orbit curvature psi at the
final parameters of trained runs, against their test loss and generalization gap (test loss - train loss).

    python -m teleport_runner.reporting.correlation RUN_OR_SWEEP_DIR... [--out DIR] [--batches 200] ...

Each run folder needs ``summary.json`` (completed), ``.hydra/config.yaml`` and a checkpoint taken at its last
step (``checkpoint.every`` dividing its steps: docs/followup.md); folders without them are named and skipped.
phi and psi are the teleport objectives themselves (``teleport/objectives.py``, ``teleport/curvature.py``), bound
to the run's problem and symmetry as a teleport binds them and evaluated at the identity (the final parameters),
averaged over ``batches`` teleport batches of ``batch_size`` from the run's epoch-0 order. As the follow-up's
``correlation.py``: 20 radii 0.001, 0.011, ..., 0.191, directions uniform on [0, 1) normalized (``positive``),
200 batches of 200, one Lie-algebra direction per batch; one perturbation direction per batch serves all radii
(the follow-up draws one per radius). The draws come from ``seed`` + the batch index, the same in every run.
Writes correlation.json, correlation.md and correlation.png.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ..errors import UserError
from .build import _json_safe
from .stats import number, pearson

#: The follow-up's MNIST radii: np.arange(0.001, 0.2, 0.01).
RADII = tuple(round(0.001 + 0.01 * i, 3) for i in range(20))
MEASURES = (("phi", "sharpness φ"), ("psi", "curvature ψ"))
#: The generalization gap and the test loss (the follow-up's), and the training loss: what phi also tracks.
TARGETS = (("gap", "test loss - train loss"), ("test_loss", "test loss"), ("train_loss", "train loss"))


@dataclass
class Settings:
    batches: int = 200
    batch_size: int = 200
    radii: tuple = RADII
    n_directions: int = 1  # sharpness: directions per batch, each at every radius
    n_curves: int = 1  # curvature: Lie-algebra directions per batch
    directions: str = "positive"
    symmetry: str | None = None  # a conf/symmetry option for psi; None: the run's own
    seed: int = 0


@dataclass
class Point:
    run_dir: str
    seed: int
    phi: float
    psi: float
    train_loss: float
    test_loss: float
    val_loss: float
    gap: float = field(init=False)

    def __post_init__(self):
        self.gap = self.test_loss - self.train_loss


def run_files(run_dir: Path) -> tuple[dict, object, Path]:
    """(summary, config, checkpoint path) of a finished run, or a ``UserError`` saying what is missing."""
    summary_file, cfg_file = run_dir / "summary.json", run_dir / ".hydra" / "config.yaml"
    if not summary_file.exists() or not cfg_file.exists():
        raise UserError(f"{run_dir} has no {'summary.json' if not summary_file.exists() else '.hydra/config.yaml'}")
    summary, cfg = json.loads(summary_file.read_text()), OmegaConf.load(cfg_file)
    if summary.get("status") != "completed" or "test_loss" not in (summary.get("final_metrics") or {}):
        raise UserError(f"{run_dir} did not complete with a test loss (status {summary.get('status')!r})")
    ckpt = run_dir / OmegaConf.select(cfg, "checkpoint.path", default="checkpoint.pt")
    if not ckpt.exists():
        raise UserError(f"{run_dir} has no checkpoint ({ckpt.name}); train it with checkpoint.every=N, N dividing "
                        "the run's steps (e.g. 100), so that its final parameters are saved")
    return summary, cfg, ckpt


def evaluate_run(run_dir: Path, settings: Settings) -> Point:
    """phi and psi at the run's final parameters, with its losses (``UserError`` when the folder does not fit)."""
    from ..runner import _instantiate, resolve_dtype

    summary, cfg, ckpt = run_files(run_dir)
    state = torch.load(ckpt, weights_only=True, map_location="cpu")
    if state.get("step") != summary.get("steps"):
        raise UserError(f"{run_dir}: its checkpoint is at step {state.get('step')}, not at the run's last step "
                        f"{summary.get('steps')}; checkpoint.every must divide the number of steps")
    dtype, device = resolve_dtype(cfg.dtype), torch.device("cpu")
    problem = _instantiate(cfg.problem, "problem")
    problem.setup(device, dtype, int(cfg.seed))
    node = OmegaConf.load(Path(__file__).parents[1] / "conf" / "symmetry" / f"{settings.symmetry}.yaml") \
        if settings.symmetry else cfg.symmetry
    params = [p.to(device, dtype) for p in state["params"]]
    try:
        symmetry = _instantiate(node, "symmetry").for_problem(problem)
        symmetry.bind(problem)
        phi, psi = measure(problem, symmetry, params, settings)
    except UserError as exc:  # the symmetry does not fit this network or batch: say which run
        raise UserError(f"{run_dir}: {str(exc).rstrip('.')}") from None
    metrics = summary["final_metrics"]
    return Point(str(run_dir), int(cfg.seed), phi, psi, number(summary.get("final_loss")),
                 number(metrics["test_loss"]), number(metrics.get("val_loss")))


def measure(problem, symmetry, params, settings: Settings) -> tuple[float, float]:
    """(phi, psi) at ``params``: the teleport objectives at the identity, averaged over the teleport batches."""
    from ..teleport.objectives import make_objective

    sharp = make_objective("sharpness", "max", settings.radii, settings.n_directions, settings.directions)
    curve = make_objective("curvature", "max", settings.radii, settings.n_curves, settings.directions)
    curve.check(symmetry)
    batches = problem.teleport_batches(0, settings.batches, settings.batch_size)
    totals = [0.0, 0.0]
    for k, batch in enumerate(batches):
        ctx = symmetry.prepare(params, batch)
        for i, objective in enumerate((sharp, curve)):
            generator = torch.Generator(device=params[0].device).manual_seed(settings.seed + k)
            target = objective.bind(problem, symmetry, params, batch, ctx, generator)
            totals[i] += float(target.score(symmetry.identity(params, ctx)))
    return totals[0] / len(batches), totals[1] / len(batches)


def run_dirs(paths) -> list[Path]:
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise UserError(f"{path} is not a directory; pass run or sweep folders (outputs/multirun/<time>).")
        files = [path / "summary.json"] if (path / "summary.json").exists() else sorted(path.rglob("summary.json"))
        found += [f.parent for f in files if f.parent not in found]
    return found


def correlations(points: list[Point]) -> list[dict]:
    return [{"measure": m, "against": t, **pearson([getattr(p, m) for p in points], [getattr(p, t) for p in points])}
            for m, _ in MEASURES for t, _ in TARGETS]


def study(paths, out: Path | None = None, settings: Settings | None = None, figure: bool = True) -> dict:
    """Evaluate every run under ``paths``, correlate, write correlation.{json,md,png} to ``out``; the result."""
    settings = settings or Settings()
    points, skipped = [], []
    for run_dir in run_dirs(paths):
        try:
            points.append(evaluate_run(run_dir, settings))
        except UserError as exc:
            skipped.append(str(exc).rstrip("."))
            print(f"Warning: skipped {skipped[-1]}.", file=sys.stderr)
    if len(points) < 3:
        first = f"; the first: {skipped[0]}" if skipped else ""
        raise UserError(f"the correlation study needs at least 3 finished runs with a final checkpoint; found "
                        f"{len(points)} under {', '.join(map(str, paths))} ({len(skipped)} skipped{first}). Train them "
                        "with teleport-train -m experiment=followup_mnist teleport=none schedule=none "
                        "problem.slope=0.1 checkpoint.every=100 seed='range(0,20)' (docs/followup.md).")
    points.sort(key=lambda p: (p.seed, p.run_dir))
    result = {"settings": {**asdict(settings), "radii": list(settings.radii)}, "correlations": correlations(points),
              "runs": [asdict(p) for p in points], "skipped": skipped}
    out = Path(out or paths[0])
    out.mkdir(parents=True, exist_ok=True)
    (out / "correlation.json").write_text(json.dumps(_json_safe(result), indent=2) + "\n")
    table = markdown(result)
    (out / "correlation.md").write_text(table)
    print(table, end="")
    if figure:
        from .figures import draw_correlation

        draw_correlation(points, result["correlations"], out / "correlation.png")
    return result


def _fmt(value, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def markdown(result: dict) -> str:
    names, against = dict(MEASURES), dict(TARGETS)
    lines = ["| measure | against | Pearson r | p-value | n |", "|---|---|---|---|---|"]
    lines += [f"| {names[c['measure']]} | {against[c['against']]} | {_fmt(c['r'], '+.3f')} | {_fmt(c['p'], '.2g')} "
              f"| {c['n']} |" for c in result["correlations"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m teleport_runner.reporting.correlation",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run or sweep directories (searched for summary.json)")
    parser.add_argument("--out", help="where correlation.{json,md,png} go (default: the first path)")
    parser.add_argument("--batches", type=int, default=defaults.batches)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--n-directions", type=int, default=defaults.n_directions)
    parser.add_argument("--n-curves", type=int, default=defaults.n_curves)
    parser.add_argument("--directions", choices=("positive", "isotropic"), default=defaults.directions)
    parser.add_argument("--symmetry", help="a symmetry option for psi (gl_data, gl_hidden, ...); default: the run's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-figure", action="store_true")
    args = parser.parse_args(argv)
    settings = Settings(args.batches, args.batch_size, RADII, args.n_directions, args.n_curves, args.directions,
                        args.symmetry, args.seed)
    torch.set_num_threads(1)
    try:
        study(args.paths, Path(args.out) if args.out else None, settings, figure=not args.no_figure)
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
