"""Speed of teleport_runner against plain PyTorch, as ratios measured side by side in one process.

    python scripts/bench.py --out bench.json          (or: make bench)

Prints a table and writes JSON with:
  descent_vs_plain     runner descent steps/s (teleport=none, metrics logged every step as by default, run
                       files written) / those of a plain loop written here (same model, initialization, batch
                       size, tensors in memory, torch.optim step).            target >= 0.9
  epoch_vs_dataloader  one epoch of the plain DataLoader loop (TensorDataset + DataLoader, batch 20) / one
                       epoch of the runner (validation included); also the loader's own time per epoch and
                       the ratio a runner with free data loading would reach.  target >= 3
  epoch_vs_torchvision_loader  the same against the loop most MNIST users write: torchvision's MNIST with
                       ToTensor (uint8 -> PIL -> float per sample) + DataLoader, batch 20 (written out as
                       PerSampleImages where torchvision does not import).    context, no target
  ascent_step_cost     time of one teleport ascent step / one descent step, per symmetry and workload
                       (marginal cost over a teleport of the default 10 steps: (t(10 steps) - t(1 step)) / 9,
                       so per-teleport setup is excluded and later, costlier steps are included), with the
                       teleport lr and max_group_norm of the workload's preset (ASCENT_PRESETS).
                                                                              target <= 3
  scaling              teleport (10 ascent steps) and descent time against width d and depth, with fitted
                       exponents; plot in scaling.png next to --out. Its ``figure6``: the paper's figure 6, total
                       time of 300 epochs with and without a teleport every 10 epochs (figure6.png).
All timings: medians over repeats after warm-up; CUDA events on a GPU (the script runs unchanged there). Next to
each median ratio the JSON (``spread``) and the table give the smallest and largest per-repeat ratio: on a shared
machine a ratio moves with the machine's speed, and the spread shows by how much.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from rich.console import Console
from rich.table import Table
from rich.text import Text  # plain text: labels such as "gl_data[linear]" are not rich markup

from teleport_runner.logging import JsonlSink
from teleport_runner.loop import RunStats, train
from teleport_runner.problems import data as idx
from teleport_runner.teleport import GradientAscent, NoTeleport
from teleport_runner import CONFIG_DIR
from teleport_runner.runner import build

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
#: torch's CPU threads for every timing here (recorded in the JSON): on a shared 2-core machine the default two
#: threads spin against other processes and make timings 10-80x noisier; the runner's threads=auto picks one too.
THREADS = 1
WORKLOADS = {  # name: overrides
    "mnist_784-512-512-10_b20": ["problem=mnist", "problem.hidden=[512,512]", "problem.batch_size=20"],
    "mnist_784-16-10-10_b20": ["problem=mnist", "problem.hidden=[16,10]", "problem.batch_size=20",
                               "problem.bias=false"],
    "regression_mlp": ["problem=mlp_regression"],
    "rosenbrock": ["problem=rosenbrock"],
    "lenet_mnist_b20": ["experiment=lenet_mnist"],  # problem=module: LeNet-5 (conv) through functional_call
}
EPOCH_WORKLOAD = "mnist_784-16-10-10_b20"  # epoch_vs_dataloader runs when this workload is selected
# The preset whose teleport lr and max_group_norm time each workload's ascent steps: steps as large as real
# teleports take (the exponential's cost grows with the step's norm; a vanishing lr would flatter it).
ASCENT_PRESETS = {"mnist_784-512-512-10_b20": "paper_mnist", "mnist_784-16-10-10_b20": "followup_mnist",
                  "regression_mlp": "paper_regression", "rosenbrock": "paper_rosenbrock",
                  "lenet_mnist_b20": "lenet_mnist"}
# Network symmetries with their defaults and the two cheaper exact variants (see layer_pairs.py):
# g = I + T instead of exp(T), and the batch subgroup g = I + U V^T (O(d^2 batch) work instead of O(d^3)).
GL_VARIANTS = {"": {}, "[linear]": {"parametrization": "linear"}, "[subgroup=batch]": {"subgroup": "batch"},
               "[subgroup=batch,linear]": {"subgroup": "batch", "parametrization": "linear"}}
NETWORK_SYMMETRIES = [(f"{sym}{tag}", sym, settings) for sym in ("gl_data", "gl_hidden")
                      for tag, settings in GL_VARIANTS.items()] + [("rescale", "rescale", {})]
SYMMETRIES = {"mnist": NETWORK_SYMMETRIES, "mlp_regression": NETWORK_SYMMETRIES,
              "rosenbrock": [("level_set", "level_set", {})], "module:LeNet5": [("rescale", "rescale", {})]}


def marginal_step_s(short, long, n_steps: int) -> float:
    """Seconds per step from (t(2n) - t(n)) / n: per-run fixed costs (opening files, the runner's final
    full-data loss) cancel, so this is the steady-state step."""
    return (timer(long, 1, warmup=0) - timer(short, 1, warmup=0)) / n_steps


def paired_marginal(plain, runner, n_steps: int, repeats: int) -> tuple[float, float, list[float]]:
    """Steady-state seconds per step of two loops (``marginal_step_s``), timed alternately in every repeat so a
    slow phase of the machine hits both: their medians over repeats, after one warm-up, and the per-repeat ratios
    plain / runner."""
    fns = {key: (make(n_steps), make(2 * n_steps)) for key, make in (("plain", plain), ("runner", runner))}
    for short, long in fns.values():
        short(), long()
    samples = {"plain": [], "runner": []}
    for _ in range(repeats):
        for key, (short, long) in fns.items():
            samples[key].append(marginal_step_s(short, long, n_steps))
    ratios = [p / r for p, r in zip(samples["plain"], samples["runner"])]
    return statistics.median(samples["plain"]), statistics.median(samples["runner"]), ratios


def timer(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if DEVICE.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def setup(overrides: list[str], data_root: str):
    data = [f"problem.data.root={data_root}"] if uses_mnist(overrides) else []
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["teleport=none", *overrides, *data])
    return build(cfg, DEVICE, torch.float32)


def uses_mnist(overrides: list[str]) -> bool:
    return "problem=mnist" in overrides or "experiment=lenet_mnist" in overrides


def plain_model(problem, params):
    """nn.Sequential with the runner's initial weights copied in (for a module problem: the module itself)."""
    if getattr(problem, "is_module", False):
        model = copy.deepcopy(problem.model)
        with torch.no_grad():
            for p, q in zip(model.parameters(), params):
                p.copy_(q)
        return model
    layers = []
    for i, (wi, bi) in enumerate(problem.layers):
        w = params[wi]
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=bi is not None, device=DEVICE)
        with torch.no_grad():
            lin.weight.copy_(w)
            if bi is not None:
                lin.bias.copy_(params[bi])
        layers.append(lin)
        if i < len(problem.layers) - 1:
            layers.append(torch.nn.LeakyReLU(problem.slope))
    return torch.nn.Sequential(*layers)


def plain_steps(problem, params, n_steps: int):
    """The loop a user writes: tensors in memory, a permutation, slices, torch.optim.SGD."""
    if problem.name == "rosenbrock":
        x = params[0].detach().clone().requires_grad_(True)
        opt = torch.optim.SGD([x], lr=1e-3)

        def run():
            for _ in range(n_steps):
                opt.zero_grad()
                loss = 100 * (x[0] ** 2 - x[1]) ** 2 + (x[0] - 1) ** 2
                loss.backward()
                opt.step()
        return run
    model = plain_model(problem, params)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    if problem.name == "mlp_regression":
        X, Y = problem.train_batch(0)

        def run():
            for _ in range(n_steps):
                opt.zero_grad()
                loss = 0.5 * (model(X) - Y).square().sum()
                loss.backward()
                opt.step()
        return run
    X, Y, bs = problem.x_train, problem.y_train, problem.batch_size

    def run():
        perm = torch.randperm(X.shape[0], device=DEVICE)
        for i in range(n_steps):
            j = perm[(i * bs) % (X.shape[0] - bs):][:bs]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X[j]), Y[j])
            loss.backward()
            opt.step()
    return run


def runner_steps(problem, params, optimizer, n_steps: int, out_dir: Path):
    def run():
        train(problem=problem, params=params, optimizer=optimizer, symmetry=None, teleporter=NoTeleport(),
              teleport_steps=[], total_steps=n_steps, sink=JsonlSink(out_dir), generator=torch.Generator(DEVICE),
              stats=RunStats([]), log_every=1)
    return run


def dataloader_epoch(problem, params, train: bool = True, dataset=None):
    """The loop most users write: a Dataset (by default TensorDataset of the training split) + DataLoader(batch
    20, shuffle), images flattened for the MLP. ``train=False`` only iterates the loader, which measures its own
    cost per epoch (and so the best ratio any runner could reach)."""
    from torch.utils.data import DataLoader, TensorDataset

    model = plain_model(problem, params)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    # As users write it: the dataset in host memory, each batch moved to the device (a no-op on the CPU).
    if dataset is None:
        dataset = TensorDataset(problem.x_train.cpu(), problem.y_train.cpu())
    loader = DataLoader(dataset, batch_size=problem.batch_size, shuffle=True, pin_memory=DEVICE.type == "cuda")

    def run():
        for x, y in loader:
            x, y = x.to(DEVICE, non_blocking=True).flatten(1), y.to(DEVICE, non_blocking=True)
            if train:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
    return run


class PerSampleImages(torch.utils.data.Dataset):
    """What ``torchvision.datasets.MNIST(root, transform=transforms.ToTensor())`` does per sample, written out
    for where torchvision does not import (the CPU torch here): the uint8 image becomes a PIL image, ToTensor
    turns it into a (1, 28, 28) float tensor divided by 255, and the label an int."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        image = Image.fromarray(self.images[i].numpy())  # a 2-D uint8 array: mode "L", as torchvision's MNIST
        x = torch.from_numpy(np.array(image, np.uint8, copy=True)).view(image.size[1], image.size[0], 1)
        return x.permute(2, 0, 1).contiguous().float().div(255), int(self.labels[i])


def torchvision_style_dataset(problem):
    """(dataset, what it is): the runner's training split as the loop most MNIST users write reads it, per sample
    from uint8 images. torchvision's own MNIST class where torchvision imports, ``PerSampleImages`` otherwise."""
    images = (problem.x_train.cpu() * 255).round().to(torch.uint8).view(-1, 28, 28)  # exact: x = uint8 / 255
    labels = problem.y_train.cpu()
    try:  # torchvision fails to import beside the CPU torch (pytorch/vision#9085); its MNIST needs root/MNIST/raw
        from torchvision import datasets, transforms

        dataset = datasets.MNIST(str(problem.data_folder.parent.parent), train=True, transform=transforms.ToTensor())
    except Exception:
        return PerSampleImages(images, labels), "PerSampleImages (torchvision's MNIST + ToTensor, written out)"
    dataset.data, dataset.targets = images, labels  # the runner's split, not all 60k
    return dataset, "torchvision.datasets.MNIST + ToTensor"


def torchvision_style_epoch(problem, params):
    """(run, what it is): one epoch of the loop most MNIST users write, ``dataloader_epoch`` over
    ``torchvision_style_dataset``. Context for ``epoch_vs_dataloader``, whose baseline already holds float tensors."""
    dataset, kind = torchvision_style_dataset(problem)
    return dataloader_epoch(problem, params, dataset=dataset), kind


def preset_ascent(workload: str) -> dict:
    """``lr`` and ``max_group_norm`` of the workload's preset (``ASCENT_PRESETS``)."""
    from omegaconf import OmegaConf

    teleport = OmegaConf.load(Path(CONFIG_DIR) / "experiment" / f"{ASCENT_PRESETS[workload]}.yaml").teleport
    return {"lr": teleport.lr, "max_group_norm": teleport.get("max_group_norm")}


def ascent_step_cost(problem, params, symmetry_name: str, settings: dict, descent_step_s, repeats: int,
                     ascent: dict) -> tuple[float, list[float]]:
    """Median and [min, max] over repeats of (one ascent step) / (one descent step), the two timed back to back in
    each repeat (this VM's speed drifts between minutes; a ratio of two timings taken apart would carry that drift).
    ``descent_step_s()`` times the runner's descent step; the ascent step is (t(N steps) - t(1 step)) / (N - 1) for
    the default teleport.steps N = 10 (a factored step's cost grows with the step's index, see
    gl_elements.FactoredElement), with the teleport settings ``ascent`` (``preset_ascent``)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.load(Path(CONFIG_DIR) / "symmetry" / f"{symmetry_name}.yaml")
    symmetry = instantiate(OmegaConf.merge(config, settings)).for_problem(problem)
    symmetry.bind(problem)
    w = [p.detach() for p in params]
    # A teleport batch each action is exact on: the small network's hidden widths (16, 10) bound it.
    batch_size = None if getattr(problem, "sizes", [784, 512])[1] >= 20 else 8
    batch = problem.teleport_batches(0, 1, batch_size)[0]
    ctx = symmetry.prepare(w, batch)
    gen = torch.Generator(DEVICE).manual_seed(0)
    n = OmegaConf.load(Path(CONFIG_DIR) / "teleport" / "gradient_ascent.yaml").steps  # the default, 10
    one, full = (GradientAscent(steps=k, **ascent) for k in (1, n))
    ratios = []
    for _ in range(repeats):
        t1 = timer(lambda: one.search(problem, symmetry, w, batch, ctx, gen), 1)
        tn = timer(lambda: full.search(problem, symmetry, w, batch, ctx, gen), 1)
        ratios.append((tn - t1) / (n - 1) / descent_step_s())
    return statistics.median(ratios), [min(ratios), max(ratios)]


def scaling(out_png: Path) -> dict:
    rows = []
    for d, depth in [(d, 3) for d in (32, 64, 128, 256, 512)] + [(128, L) for L in range(3, 10)]:
        problem, symmetry, _, _, params, optimizer = setup(
            ["problem=mlp_regression", f"problem.dims=[{','.join([str(d)] * (depth + 1))}]",
             f"problem.n_samples={d}", "problem.init=default", "symmetry=gl_data"], "")
        symmetry.bind(problem)
        w, batch = [p.detach() for p in params], problem.train_batch(0)
        solver = GradientAscent(steps=10, **preset_ascent("mnist_784-512-512-10_b20"))  # paper_mnist's steps
        teleport_s = timer(lambda: solver.search(problem, symmetry, w, batch, symmetry.prepare(w, batch),
                                                 torch.Generator(DEVICE)), 3)
        descent_s = timer(plain_steps(problem, params, 10), 3) / 10
        rows.append({"d": d, "layers": depth, "teleport_s": teleport_s, "descent_step_s": descent_s})
    width, deep = rows[:5], rows[5:]  # d = 32..512 at 3 layers; 3..9 layers at d = 128

    def exponent(xs, ys):
        return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])

    fits = {"teleport_vs_d": exponent([r["d"] for r in width], [r["teleport_s"] for r in width]),
            "descent_vs_d": exponent([r["d"] for r in width], [r["descent_step_s"] for r in width]),
            "teleport_vs_layers": exponent([r["layers"] for r in deep], [r["teleport_s"] for r in deep]),
            "descent_vs_layers": exponent([r["layers"] for r in deep], [r["descent_step_s"] for r in deep])}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = ((axes[0], width, "d", "width d (3 layers)", "d", "vs_d"),
              (axes[1], deep, "layers", "layers (d = 128)", "L", "vs_layers"))
    for ax, data, key, label, var, fit in panels:
        xs = [r[key] for r in data]
        ax.plot(xs, [r["teleport_s"] for r in data], "o-",
                label=f"teleport, 10 ascent steps (~ {var}^{fits['teleport_' + fit]:.2f})")
        ax.plot(xs, [r["descent_step_s"] for r in data], "s-",
                label=f"descent step (~ {var}^{fits['descent_' + fit]:.2f})")
        ax.set(xlabel=label, ylabel="seconds", xscale="log", yscale="log")
        ax.set_xticks(xs, [str(x) for x in xs])  # the measured sizes, not log-scale minor ticks
        ax.minorticks_off()
        ax.legend()
    fig.suptitle(f"teleport and descent time ({DEVICE.type})")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    return {"rows": rows, "fitted_exponents": fits, "figure6": figure6(rows, out_png.with_name("figure6.png"))}


#: The paper's figure 6: 300 epochs (one full-batch step each: the data is d x d), a 10-step teleport every 10.
FIG6_EPOCHS, FIG6_EVERY = 300, 10


def figure6(rows: list[dict], out_png: Path) -> dict:
    """Total training time with and without teleport against width and depth, from the measured step and teleport
    times (300 descent steps + 30 teleports of 10 ascent steps), drawn as the paper's figure 6."""
    import matplotlib.pyplot as plt

    table = [{"d": r["d"], "layers": r["layers"], "without_s": FIG6_EPOCHS * r["descent_step_s"],
              "with_s": FIG6_EPOCHS * r["descent_step_s"] + FIG6_EPOCHS // FIG6_EVERY * r["teleport_s"]}
             for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, data, key, label in ((axes[0], table[:5], "d", "width d (3 layers)"),
                                 (axes[1], table[5:], "layers", "layers (d = 128)")):
        xs = [r[key] for r in data]
        ax.plot(xs, [r["with_s"] for r in data], "o-", label="with teleport (every 10 epochs)")
        ax.plot(xs, [r["without_s"] for r in data], "s-", label="without teleport")
        ax.set(xlabel=label, ylabel=f"time of {FIG6_EPOCHS} epochs (s)", xscale="log", yscale="log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.minorticks_off()
        ax.legend()
    fig.suptitle(f"total training time, the paper's figure 6 ({DEVICE.type})")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return {"epochs": FIG6_EPOCHS, "teleport_every": FIG6_EVERY, "rows": table,
            "overhead": [r["with_s"] / r["without_s"] for r in table]}


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench.json", help="the JSON result; scaling.png is written beside it")
    parser.add_argument("--steps", type=positive_int, default=300, help="descent steps per timed repeat")
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="timed repeats per ratio (the median is reported)")
    parser.add_argument("--skip-scaling", action="store_true", help="leave out the width/depth scaling sweep")
    parser.add_argument("--skip-wait", action="store_true",
                        help="leave out the sections of scripts/bench_wait.py (startup, sweep, threads)")
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS),
                        help=f"a subset of the workloads (default: all; none: only the scaling sweep; "
                             f"epoch_vs_dataloader needs {EPOCH_WORKLOAD})")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    out_dir = Path(args.out).resolve().parent  # checked now, not after minutes of timing
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out {args.out}: cannot create its folder ({exc.strerror})")
    if not os.access(out_dir, os.W_OK):
        parser.error(f"--out {args.out}: its folder is not writable")
    console = Console(width=180)
    tmp = Path(tempfile.mkdtemp(prefix="teleport_bench_"))
    data_root, data_note = idx.default_root(), "no image data needed"
    if any(uses_mnist(WORKLOADS[name]) for name in args.workloads):
        try:
            idx.locate("mnist", data_root)
            data_note = f"MNIST from {data_root}"
        except Exception:
            data_root = str(tmp / "data")
            idx.write_synthetic(data_root, "mnist", n_train=60000, n_test=1000)
            data_note = "synthetic MNIST-shaped data (real files not found)"
    ascent = {name: preset_ascent(name) for name in args.workloads}  # read once, used by every symmetry's timing
    result = {"device": str(DEVICE), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "data": data_note, "ascent_settings": {name: {"preset": ASCENT_PRESETS[name], **ascent[name]}
                                                     for name in args.workloads},
              "descent_vs_plain": {}, "ascent_step_cost": {}, "step_time_s": {},
              "spread": {"descent_vs_plain": {}, "ascent_step_cost": {}}}
    for name in args.workloads:
        overrides = WORKLOADS[name]
        problem, _, _, _, params, optimizer = setup(overrides, data_root)
        plain_s, runner_s, ratios = paired_marginal(
            lambda n: plain_steps(problem, params, n),
            lambda n: runner_steps(problem, params, optimizer, n, tmp / name), args.steps, args.repeats)
        result["descent_vs_plain"][name] = statistics.median(ratios)
        result["spread"]["descent_vs_plain"][name] = [min(ratios), max(ratios)]
        result["step_time_s"][name] = {"plain": plain_s, "runner": runner_s}
        steps = max(20, args.steps // 3)
        runs = [runner_steps(problem, params, optimizer, n, tmp / name) for n in (steps, 2 * steps)]

        def descent_step_s():
            return marginal_step_s(*runs, steps)

        for label, sym, settings in SYMMETRIES[problem.name if problem.name in SYMMETRIES else "mnist"]:
            key = f"{name}/{label}"
            try:
                result["ascent_step_cost"][key], result["spread"]["ascent_step_cost"][key] = ascent_step_cost(
                    problem, params, sym, settings, descent_step_s, args.repeats, ascent[name])
            except Exception as exc:  # a symmetry that does not fit the workload is reported, not fatal
                result["ascent_step_cost"][key] = f"n/a: {exc}"
        console.print(f"[dim]{name}: done[/dim]")
    if EPOCH_WORKLOAD in args.workloads:
        problem, _, _, _, params, optimizer = setup(WORKLOADS[EPOCH_WORKLOAD], data_root)
        per_sample_epoch, per_sample_kind = torchvision_style_epoch(problem, params)
        epochs = {"loader": dataloader_epoch(problem, params),
                  "runner": runner_steps(problem, params, optimizer, problem.steps_per_epoch, tmp / "epoch"),
                  "loader_only": dataloader_epoch(problem, params, train=False), "per_sample": per_sample_epoch}
        times = {key: [] for key in epochs}
        for _ in range(3):  # alternately, as the descent comparison
            for key, epoch in epochs.items():
                times[key].append(timer(epoch, 1, warmup=0 if times[key] else 1))
        loader_s, runner_epoch_s, loading_s = (statistics.median(times[k]) for k in ("loader", "runner", "loader_only"))
        # A runner that did the same eager steps with no data cost at all would take loader_s - loading_s.
        result["epoch_vs_dataloader"] = {EPOCH_WORKLOAD: loader_s / runner_epoch_s, "dataloader_epoch_s": loader_s,
                                         "runner_epoch_s": runner_epoch_s, "dataloader_loading_only_s": loading_s,
                                         "bound_with_free_data": loader_s / max(loader_s - loading_s, 1e-12)}
        per_sample_s = statistics.median(times["per_sample"])
        result["epoch_vs_torchvision_loader"] = {EPOCH_WORKLOAD: per_sample_s / runner_epoch_s,
                                                 "loader_epoch_s": per_sample_s, "loader": per_sample_kind}
    if not args.skip_scaling:
        result["scaling"] = scaling(Path(args.out).with_name("scaling.png"))
    if not args.skip_wait:  # the time users wait: start-up, a 20-job sweep, threads (scripts/bench_wait.py)
        import bench_wait

        for section in ("startup", "sweep", "threads"):
            result[section] = getattr(bench_wait, section)()
        torch.set_num_threads(THREADS)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    table = Table(title=f"teleport_runner benchmark on {DEVICE} ({data_note})")
    table.add_column("metric")
    table.add_column("workload", no_wrap=True)
    table.add_column("ratio", justify="right")
    table.add_column("repeats", justify="right")
    table.add_column("target")
    table.add_column("measured")

    def spread(metric: str, name: str) -> str:
        low_high = result["spread"][metric].get(name)
        return f"[{low_high[0]:.2f}, {low_high[1]:.2f}]" if low_high else ""  # [min, max]: a minus sign stays one

    for name, ratio in result["descent_vs_plain"].items():
        times = result["step_time_s"][name]
        table.add_row("descent_vs_plain", name, f"{ratio:.2f}", spread("descent_vs_plain", name), ">= 0.9",
                      f"plain {times['plain'] * 1e3:.3f} ms/step, runner {times['runner'] * 1e3:.3f} ms/step")
    if "epoch_vs_dataloader" in result:
        epoch = result["epoch_vs_dataloader"]
        table.add_row("epoch_vs_dataloader", EPOCH_WORKLOAD, f"{epoch[EPOCH_WORKLOAD]:.2f}", "", ">= 3",
                      f"DataLoader {epoch['dataloader_epoch_s']:.2f} s/epoch (loading alone "
                      f"{epoch['dataloader_loading_only_s']:.2f} s), runner {epoch['runner_epoch_s']:.2f} s, "
                      f"bound {epoch['bound_with_free_data']:.2f}")
    if "epoch_vs_torchvision_loader" in result:
        epoch = result["epoch_vs_torchvision_loader"]
        table.add_row("epoch_vs_torchvision_loader", EPOCH_WORKLOAD, f"{epoch[EPOCH_WORKLOAD]:.2f}", "",
                      "(context)", Text(f"{epoch['loader']}: {epoch['loader_epoch_s']:.2f} s/epoch"))
    for name, ratio in result["ascent_step_cost"].items():
        table.add_row("ascent_step_cost", Text(name), f"{ratio:.2f}" if isinstance(ratio, float) else Text(ratio),
                      spread("ascent_step_cost", name), "<= 3")
    if "startup" in result:
        table.add_row("help_vs_torch_import", "teleport-train --help", f"{result['startup']['help_vs_torch_import']:.2f}",
                      "", "<= 0.3")
        table.add_row("sweep wall_vs_work", "20 x paper_rosenbrock", f"{result['sweep']['wall_vs_work']:.2f}", "",
                      "<= 1.5", f"{result['sweep']['wall_s']:.1f} s for {result['sweep']['in_loop_s']:.1f} s in loop")
        for name, row in result["threads"].items():
            table.add_row("threads auto_vs_best", name, f"{row['auto_vs_best']:.2f}", "", "<= 1.05",
                          f"auto = {row['auto']}; 1 thread {row['step_s']['1'] * 1e3:.3f} ms, 2 threads "
                          f"{row['step_s']['2'] * 1e3:.3f} ms per step")
    if "scaling" in result:
        for key, value in result["scaling"]["fitted_exponents"].items():
            table.add_row("scaling exponent", key, f"{value:.2f}", "", "")
    console.print(table)
    console.print(f"written: {args.out}")


if __name__ == "__main__":
    main()
