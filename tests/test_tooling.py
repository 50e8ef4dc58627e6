"""Experiment tooling, end to end through the CLI: multirun sweeps and teleport-report, a failing sweep job,
the submitit_local launcher, the Optuna preset, and the W&B sink in offline mode. (Checkpoint and resume:
tests/test_tooling_resume.py.)"""
from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def teleport_train(*args, env=None, timeout=180, check=True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "teleport_runner.train", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"teleport-train {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def summaries(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))}


# ---- sweeps and the report --------------------------------------------------------------------------------

def test_multirun_2x2_then_report(tmp_path):
    sweep = tmp_path / "sweep"
    proc = teleport_train("-m", "seed=0,1", "teleport=none,gradient_ascent", "experiment=paper_booth",
                          f"hydra.sweep.dir={sweep}")
    # logger=console off a terminal: no progress bar, one summary table per job
    assert proc.stdout.count("teleport_runner: completed") == 4
    assert "\x1b[" not in proc.stdout
    runs = summaries(sweep)
    assert len(runs) == 4 and all(s["status"] == "completed" for s in runs.values())
    # the sweep ends with its report (hydra.callbacks.report): the paired table printed, report.md written
    assert "paired against no teleport" in proc.stdout and f"Wrote {sweep / 'report.md'}" in proc.stdout
    assert "| teleport=gradient_ascent | teleport=none | 2 |" in (sweep / "report.md").read_text()
    (sweep / "report.md").unlink()

    report = subprocess.run([sys.executable, "-m", "teleport_runner.reporting", str(sweep)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    # groups are named by the options the sweep gave (Hydra's recorded choices), not by class names
    assert "teleport=none" in report.stdout and "teleport=gradient_ascent" in report.stdout
    md = (sweep / "report.md").read_text()
    assert "4 runs in 2 groups" in md
    assert "| teleport=none | 2/2 |" in md and "| teleport=gradient_ascent | 2/2 |" in md
    assert "| teleport=gradient_ascent | teleport=none | 2 |" in md  # the paired speed-up row
    for name in ("loss_vs_step", "loss_vs_time", "grad_vs_loss"):
        png = sweep / f"report_{name}.png"
        assert png.stat().st_size > 5000 and f"]({png.name})" in md


def test_sweep_report_callback_warns_instead_of_failing_and_can_be_off(tmp_path, capsys):
    from omegaconf import OmegaConf

    from teleport_runner.reporting.sweep import SweepReport

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    SweepReport().on_multirun_end(config)  # an empty sweep folder: nothing to report, the sweep still ends well
    err = capsys.readouterr().err
    assert err.startswith("Warning: no report for the sweep") and f"teleport-report {tmp_path}" in err
    SweepReport(enabled=False).on_multirun_end(config)
    assert capsys.readouterr().err == "" and not (tmp_path / "report.md").exists()


def test_report_numbers_and_pairing(tmp_path):
    """The report's arithmetic on hand-written run dirs: grouping, seed pairing, speed-up, failed runs."""
    from teleport_runner.reporting.build import build_report

    def fake(name, seed, target, final, steps_to, status="completed"):
        run = tmp_path / name
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(
            f"seed: {seed}\nteleport:\n  _target_: teleport_runner.teleport.{target}\noptimizer:\n  lr: 0.1\n")
        (run / "summary.json").write_text(json.dumps({
            "status": status, "seed": seed, "steps": 100, "steps_done": 100, "final_loss": final,
            "steps_to_loss": {"0.1": steps_to}, "time_total_s": 1.0, "time_teleport_s": 0.1,
            "time_descent_s": 0.5, "n_teleports": 1}))
        (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / (s + 1), "grad_norm_sq": 1.0,
                                                               "time_s": s * 0.01}) + "\n" for s in range(5)))
        (run / "teleports.jsonl").write_text(json.dumps({"step": 3, "accepted": True, "time_s": 0.1}) + "\n")

    fake("a0", 0, "NoTeleport", 0.2, 40)
    fake("a1", 1, "NoTeleport", 0.4, None)  # never reached: counts as steps + 1 = 101
    fake("b0", 0, "GradientAscent", 0.1, 10)
    fake("b1", 1, "GradientAscent", 0.1, 20)
    fake("b2", 2, "GradientAscent", float("nan"), None, status="diverged")
    out = build_report([tmp_path], tmp_path / "rep", figures=False)
    assert [g.label for g in out["groups"]] == ["teleport=NoTeleport", "teleport=GradientAscent"]
    assert out["results"][1]["runs"] == "2/3 (1 diverged)"
    paired = out["paired"][0]
    assert paired["seeds"] == "2"
    expected = math.sqrt(40 / 10 * 101 / 20)  # geometric mean of the per-seed ratios
    assert paired["speed-up to 0.1"].startswith(">= x") and f"{expected:.4g}" in paired["speed-up to 0.1"]
    assert paired["final loss ratio"].startswith(f"x{math.sqrt(2 * 4):.4g}")
    assert out["results"][1]["descent steps per teleport"] == "20 [20, 20]"  # 0.1 s / (0.5 s / 100 steps)
    assert out["results"][1]["teleports acc/rej"] == "3/0"
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Runs that did not complete" in md and "diverged" in md


def test_report_labels_name_options_as_typed_and_floats_short(tmp_path):
    """Groups are labelled by the config-group option Hydra recorded (teleport=none), and by the class name when an
    option name does not identify one target (a ``teleport._target_=`` override under the same option)."""
    from teleport_runner.reporting.build import build_report

    def fake(root, name, target, option, lr=0.1):
        run = root / name
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(
            f"seed: 0\nteleport:\n  _target_: teleport_runner.{target}\n  lr: {lr!r}\n")
        (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    choices:\n      teleport: {option}\n")
        (run / "summary.json").write_text(json.dumps({"status": "completed", "seed": 0, "steps": 10,
                                                      "final_loss": 1.0, "steps_to_loss": {}}))

    fake(tmp_path / "a", "x", "NoTeleport", "none")
    fake(tmp_path / "a", "y", "GradientAscent", "gradient_ascent")
    labels = [g.label for g in build_report([tmp_path / "a"], tmp_path / "ra", figures=False)["groups"]]
    assert labels == ["teleport=none", "teleport=gradient_ascent"]
    fake(tmp_path / "b", "x", "RandomSearch", "gradient_ascent")
    fake(tmp_path / "b", "y", "GradientAscent", "gradient_ascent")
    labels = [g.label for g in build_report([tmp_path / "b"], tmp_path / "rb", figures=False)["groups"]]
    assert sorted(labels) == ["teleport=GradientAscent", "teleport=RandomSearch"]
    # float settings (an Optuna sweep's) get the fewest significant digits that keep them apart
    fake(tmp_path / "c", "x", "GradientAscent", "gradient_ascent", lr=0.11336766867014442)
    fake(tmp_path / "c", "y", "GradientAscent", "gradient_ascent", lr=0.3534234664650461)
    labels = [g.label for g in build_report([tmp_path / "c"], tmp_path / "rc", figures=False)["groups"]]
    assert sorted(labels) == ["teleport.lr=0.1134", "teleport.lr=0.3534"]
    fake(tmp_path / "c", "z", "GradientAscent", "gradient_ascent", lr=0.1133677)  # equal to x's at 6 digits
    labels = [g.label for g in build_report([tmp_path / "c"], tmp_path / "rc", figures=False)["groups"]]
    assert sorted(labels) == ["teleport.lr=0.11336767", "teleport.lr=0.1133677", "teleport.lr=0.35342347"]


def test_report_skips_a_damaged_run_with_a_warning(tmp_path, capsys):
    from teleport_runner.reporting.build import build_report

    for name, text in (("good", '{"status": "completed", "seed": 0, "steps": 10, "final_loss": 0.5}'),
                       ("cut", '{"status": "compl')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(text)
    out = build_report([tmp_path], tmp_path / "rep", figures=False)
    assert [r.path.name for r in out["runs"]] == ["good"]
    assert f"Warning: skipped {tmp_path / 'cut'}" in capsys.readouterr().err


def test_failing_job_does_not_stop_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    proc = teleport_train("-m", "optimizer.lr=-1,0.08", "experiment=paper_booth", "logger=jsonl",
                          "hydra.callbacks.report.figures=false", f"hydra.sweep.dir={sweep}", check=False)
    assert proc.returncode == 1 and "Sweep finished with 1 refused" in proc.stderr
    assert "Invalid learning rate: -1" in proc.stderr and "The sweep goes on" in proc.stderr
    runs = summaries(sweep)
    assert runs["0"]["status"] == "failed" and "Invalid learning rate" in runs["0"]["message"]
    assert runs["1"]["status"] == "completed"
    # its report lists the failed job instead of dropping it
    assert "FAILED:" in proc.stdout and "Runs that did not complete" in (sweep / "report.md").read_text()


def test_submitit_local_two_job_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    teleport_train("-m", "seed=0,1", "experiment=paper_booth", "hydra/launcher=submitit_local", "logger=jsonl",
                   "plots=false", f"hydra.sweep.dir={sweep}")
    runs = summaries(sweep)
    assert sorted(runs) == ["0", "1"] and all(s["status"] == "completed" for s in runs.values())
    assert (sweep / ".submitit").is_dir()


def test_optuna_preset_runs_trials(tmp_path):
    sweep = tmp_path / "sweep"
    teleport_train("hparams_search=booth_optuna", "hydra.sweeper.n_trials=3", "logger=jsonl",
                   f"hydra.sweep.dir={sweep}")
    assert len(summaries(sweep)) == 3
    results = (sweep / "optimization_results.yaml").read_text()
    assert "teleport.lr" in results and "best_value" in results
    best = float(results.split("best_value:")[1].split()[0])
    assert math.isfinite(best) and best == min(s["final_loss"] for s in summaries(sweep).values())
    report = (sweep / "report.md").read_text()
    assert "Optuna sweep: groups sorted by" in report and "★" in report  # sorted by the objective, best marked


def test_objective_values():
    from teleport_runner.errors import ConfigError
    from teleport_runner.objective import check_metric, objective

    done = {"status": "completed", "steps": 10, "final_loss": 0.5, "steps_to_loss": {"0.001": None, "0.1": 4},
            "final_metrics": {"val_accuracy": 0.9}}
    assert objective(done, "final_loss") == 0.5
    assert objective(done, "steps_to_loss/1e-1") == 4
    assert objective(done, "steps_to_loss/1e-3") == 11  # never reached: steps + 1
    assert objective(done, "final_metrics/val_accuracy", "maximize") == 0.9
    assert objective({"status": "failed"}, "final_loss") == math.inf
    assert objective({"status": "diverged"}, "final_metrics/val_accuracy", "maximize") == -math.inf
    check_metric("steps_to_loss/0.001", [0.1, 1e-3])
    for bad in ("loss", "steps_to_loss/0.5", "steps_to_loss/x"):
        with pytest.raises(ConfigError, match="optimize_metric"):
            check_metric(bad, [0.1, 1e-3])


def test_run_and_sweep_dirs_have_microseconds():
    text = (ROOT / "teleport_runner" / "conf" / "hydra" / "default.yaml").read_text()
    assert text.count("%f}") == 2  # run.dir and sweep.dir: two runs in the same second do not collide


# ---- W&B --------------------------------------------------------------------------------------------------

def wandb_records(path: Path):
    """The records of a .wandb file (a LevelDB-style log of wandb protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, header = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    i, buf = 7, b""
    while i + header <= len(data):
        if block - i % block < header:  # block trailer padding
            i += block - i % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[i:i + header])
        buf += data[i + header:i + header + length]
        i += header + length
        if kind in (1, 4):  # FULL or LAST fragment
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def wandb_env(tmp_path, mode):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE=mode, WANDB_CONFIG_DIR=str(tmp_path / "wbcfg"), WANDB_CACHE_DIR=str(tmp_path / "wbcache"),
               WANDB_DATA_DIR=str(tmp_path / "wbdata"), WANDB_SILENT="true")
    return env


def offline_history(run: Path) -> tuple[list[dict], dict, dict]:
    """(history rows in order, summary, config) of the offline W&B run under ``run``."""
    (offline,) = run.glob("wandb/offline-run-*")
    history, summary, config = {}, {}, {}
    for record in wandb_records(next(offline.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {it.key or "/".join(it.nested_key): json.loads(it.value_json) for it in record.history.item}
            history.setdefault(items.get("_step"), {}).update(items)
        elif kind == "summary":
            summary.update({u.key or "/".join(u.nested_key): u.value_json for u in record.summary.update})
        elif kind == "config":
            config.update({u.key or "/".join(u.nested_key): u.value_json for u in record.config.update})
        elif kind == "run":
            assert record.run.run_group == ""  # a single run: no group (a multirun's jobs share the sweep's)
            config.update({u.key or "/".join(u.nested_key): u.value_json for u in record.run.config.update})
    return [history[k] for k in sorted(history)], summary, config


def test_wandb_offline_logs_metrics(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "teleport_runner.train", "experiment=paper_booth", "logger=wandb",
                           f"hydra.run.dir={run}"], cwd=ROOT, env=wandb_env(tmp_path, "offline"),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "W&B logging failed" not in proc.stderr
    assert "teleport_runner: completed" in proc.stdout  # the console logger comes with it
    history, summary, config = offline_history(run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [h for h in history if "train/loss" in h]
    assert [h["train/step"] for h in train] == [r["step"] for r in rows] == list(range(10))
    assert train[-1]["train/loss"] == pytest.approx(rows[-1]["loss"])
    assert rows[0]["time_s"] < 0.2  # the run clock starts after wandb.init
    (teleport,) = [h for h in history if "teleport/grad_norm_sq_after" in h]
    assert teleport["teleport/step"] == 4 and "teleport/grad_norm_sq_after" in teleport
    final_loss = json.loads((run / "summary.json").read_text())["final_loss"]
    assert json.loads(summary["final_loss"]) == pytest.approx(final_loss)
    assert json.loads(summary["status"]) == "completed"
    assert "optimizer" in config and "0.08" in config["optimizer"]  # the resolved config
    assert "paper_booth" in config["experiment"] and "logger=wandb" in config["overrides"]
    (offline,) = run.glob("wandb/offline-run-*")
    assert list(offline.glob("files/media/table/teleport/events_*.table.json"))
    assert {p.name.split("_")[0] for p in offline.glob("files/media/images/plots/*.png")} == {"curves", "trajectory"}


def test_wandb_has_a_row_per_teleport_and_val_keys(tmp_path, synthetic_mnist_root):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "teleport_runner.train", "problem=mnist",
                           f"problem.data.root={synthetic_mnist_root}", "problem.n_train=200", "problem.n_val=40",
                           "problem.hidden=[16,10]", "epochs=2", "symmetry=rescale", "teleport.max_group_norm=1.0",
                           "teleport.lr=0.01", "teleport.batches=2", "schedule=epochs", "schedule.epochs=[1]",
                           "logger=wandb", "plots=false", f"hydra.run.dir={run}"], cwd=ROOT,
                          env=wandb_env(tmp_path, "offline"), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    history, _, _ = offline_history(run)
    events = [json.loads(line) for line in (run / "teleports.jsonl").read_text().splitlines()]
    teleports = [h for h in history if "teleport/grad_norm_sq_after" in h]
    assert len(events) == 2 and len(teleports) == 2  # two teleports at one step: two rows
    assert {h["teleport/step"] for h in teleports} == {10}
    val = [h for h in history if "val/loss" in h]
    assert len(val) == 2 and all("val/acc" in h and "val/val_loss" not in h for h in val)


def test_wandb_bogus_mode_only_warns(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "teleport_runner.train", "experiment=paper_booth", "logger=wandb",
                           "plots=false", f"hydra.run.dir={run}"], cwd=ROOT, env=wandb_env(tmp_path, "bogus"),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "W&B logging failed in init" in proc.stderr and "'bogus'" in proc.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 10


def test_wandb_init_that_raises_only_warns(tmp_path, monkeypatch):
    import wandb

    from teleport_runner.logging import JsonlSink, Sinks
    from teleport_runner.logging.wandb import WandbSink

    def broken_init(**kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", broken_init)
    sink = Sinks([JsonlSink(tmp_path), WandbSink(mode="online", dir=str(tmp_path))])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sink.log_config({"seed": 0})
        sink.start(3)
        for step in range(3):
            sink.log(step, {"loss": 1.0, "grad_norm_sq": 2.0})
        sink.log_files([])
        sink.close({"status": "completed"})
    assert len([w for w in caught if "W&B logging failed in init" in str(w.message)]) == 1
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3  # summary.json: the RunRecord's


@pytest.mark.parametrize("launcher", ["slurm", "submitit_slurm", "submitit_local", "joblib"])
def test_launcher_configs_compose(launcher):
    from hydra import compose, initialize_config_dir

    from teleport_runner import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}", "experiment=paper_booth"],
                      return_hydra_config=True)
    assert "_target_" in cfg.hydra.launcher
    if launcher == "slurm":
        assert cfg.hydra.launcher.timeout_min == 120 and cfg.hydra.launcher.max_num_timeout == 3


# ---- the benchmark script ---------------------------------------------------------------------------------

def test_bench_script_writes_ratios(tmp_path):
    """`scripts/bench.py` on its cheapest workload: it runs from a fresh checkout and writes finite ratios for
    what it measured (the numbers themselves are machine-dependent; the README records them)."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "scripts/bench.py", "--out", str(out), "--workloads", "rosenbrock",
                           "--skip-scaling", "--skip-wait", "--steps", "30", "--repeats", "1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["device"] in ("cpu", "cuda")
    assert set(result["descent_vs_plain"]) == {"rosenbrock"} and "epoch_vs_dataloader" not in result
    assert set(result["ascent_step_cost"]) == {"rosenbrock/level_set"}
    # ascent steps timed at the preset's step size (paper_rosenbrock: lr 0.1, no bound), not a vanishing lr
    assert result["ascent_settings"] == {"rosenbrock": {"preset": "paper_rosenbrock", "lr": 0.1,
                                                        "max_group_norm": None}}
    ratios = [result["descent_vs_plain"]["rosenbrock"], result["ascent_step_cost"]["rosenbrock/level_set"]]
    # Each ratio is a difference of two wall times ((t(2n) - t(n)) / n) over a tiny workload: either sign can come
    # out in noise (descent_vs_plain = -0.03 here, on a loaded 2-core box), so the arithmetic is checked, not the sign.
    assert all(math.isfinite(r) for r in ratios)
    steps = result["step_time_s"]["rosenbrock"]
    assert ratios[0] == pytest.approx(steps["plain"] / steps["runner"])  # plain / runner, one repeat
    assert result["threads"] == 1  # set explicitly: the default threads make timings on a shared box noisy
    # next to each median, the smallest and largest per-repeat ratio (one repeat here: both equal the median)
    spreads = [result["spread"]["descent_vs_plain"]["rosenbrock"],
               result["spread"]["ascent_step_cost"]["rosenbrock/level_set"]]
    for ratio, (low, high) in zip(ratios, spreads):
        assert low == pytest.approx(ratio) and high == pytest.approx(ratio)
    assert "descent_vs_plain" in proc.stdout and "ascent_step_cost" in proc.stdout


def test_bench_per_sample_baseline_reads_the_runners_images(synthetic_mnist_root):
    """The torchvision-style baseline of `epoch_vs_torchvision_loader` (uint8 -> PIL -> float per sample) yields
    the very images and labels the runner trains on, so its epoch does the same work as the runner's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    problem = bench.setup([*bench.WORKLOADS[bench.EPOCH_WORKLOAD], "problem.n_train=200", "problem.n_val=40"],
                          synthetic_mnist_root)[0]
    dataset, kind = bench.torchvision_style_dataset(problem)
    assert len(dataset) == 200 and "MNIST" in kind
    for i in (0, 7, 199):
        image, label = dataset[i]
        assert image.shape == (1, 28, 28) and image.dtype == torch.float32
        assert torch.allclose(image.flatten().to(problem.x_train), problem.x_train[i], rtol=0, atol=1e-7)
        assert label == int(problem.y_train[i])
    assert len({int(dataset[i][1]) for i in range(50)}) > 1  # labels differ: not one sample repeated


def test_bench_scaling_sweep_fits_exponents_and_draws_them(tmp_path):
    """The scaling sweep alone (no workloads, ~15 s): 5 widths and 7 depths timed, four fitted exponents, the plot.
    On the CPU times grow with size, so every exponent is positive (the values themselves are machine-dependent;
    the README has them)."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "scripts/bench.py", "--out", str(out), "--workloads", "--skip-wait"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    scaling = result["scaling"]
    assert [(r["d"], r["layers"]) for r in scaling["rows"]] == \
        [(d, 3) for d in (32, 64, 128, 256, 512)] + [(128, depth) for depth in range(3, 10)]
    fits = scaling["fitted_exponents"]
    assert set(fits) == {"teleport_vs_d", "descent_vs_d", "teleport_vs_layers", "descent_vs_layers"}
    assert all(math.isfinite(value) for value in fits.values())
    if result["device"] == "cpu":  # compute-bound here; on a GPU the small sizes are launch-bound (flat)
        assert all(0 < value < 4 for value in fits.values())
    assert (tmp_path / "scaling.png").stat().st_size > 10_000
    fig6 = scaling["figure6"]  # the paper's figure 6: 300 epochs, a teleport every 10, with and without
    assert len(fig6["rows"]) == 12 and all(r["with_s"] > r["without_s"] > 0 for r in fig6["rows"])
    assert (tmp_path / "figure6.png").stat().st_size > 10_000


def test_joblib_jobs_record_their_thread_count(tmp_path):
    """threads=auto under the joblib launcher divides the CPUs by n_jobs, and each job's summary records it."""
    sweep = tmp_path / "sweep"
    teleport_train("-m", "experiment=paper_booth", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                   "logger=jsonl", "hydra.callbacks.report.enabled=false", f"hydra.sweep.dir={sweep}")
    for summary in summaries(sweep).values():
        assert summary["threads"] == 1 and "2 joblib jobs" in summary["threads_reason"]


def test_threads_auto_uses_one_thread_for_small_steps_and_an_integer_forces():
    from teleport_runner.errors import ConfigError
    from teleport_runner.problems.classifier import MNIST
    from teleport_runner.threads import THREADED_WORK, choose_threads, work_per_step

    small = MNIST(hidden=[512, 512], batch_size=20)
    assert work_per_step(small) < THREADED_WORK and choose_threads("auto", small)[0] == 1
    big = MNIST(hidden=[4096, 4096], batch_size=4096)
    assert work_per_step(big) >= THREADED_WORK and choose_threads("auto", big)[0] >= 1
    assert choose_threads(3, small) == (3, "set by threads")
    with pytest.raises(ConfigError, match="Invalid threads"):
        choose_threads("many", small)


def test_a_sweep_composes_one_job_per_shape_before_launching(monkeypatch):
    """The batch check composes the first job of each shape (keys, and every value that is not a number), so a
    20-seed sweep composes once before launching, and a sweep over group options composes each option."""
    from teleport_runner import hydra_patches as hydra_speed

    composed = []

    class Loader:
        def load_sweep_config(self, master_config, sweep_overrides):
            composed.append(tuple(sweep_overrides))

    class Sweeper:
        hydra_context, config_loader, config = None, Loader(), None

    seeds = [["experiment=paper_rosenbrock", f"seed={i}", f"optimizer.lr={0.1 * i}"] for i in range(20)]
    hydra_speed.validate_one_per_shape(Sweeper(), seeds)
    assert composed == [tuple(seeds[0])]
    composed.clear()
    groups = [["experiment=paper_booth", f"optimizer={o}", f"seed={i}"] for o in ("sgd", "nosuch") for i in range(3)]
    hydra_speed.validate_one_per_shape(Sweeper(), groups)
    assert composed == [tuple(groups[0]), tuple(groups[3])]
    composed.clear()
    hydra_speed.validate_one_per_shape(Sweeper(), [["+extra=1"], ["seed=1"], ["dtype=float32"], ["dtype=float64"]])
    assert len(composed) == 4  # another key, and string values, are composed each


def test_a_bad_group_option_in_a_sweep_is_refused_before_any_job(tmp_path):
    """Refused before any job runs, in one line, and the sweep folder Hydra made for it (with its multirun.yaml)
    is gone again; a sweep folder the user made beforehand stays."""
    proc = teleport_train("-m", "experiment=paper_booth", "seed=0,1", "optimizer=sgd,nosuch",
                          f"hydra.sweep.dir={tmp_path}/s", check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("Error: ") and "'optimizer/nosuch'" in proc.stderr
    assert not (tmp_path / "s").exists()
    (tmp_path / "mine").mkdir()
    proc = teleport_train("-m", "experiment=paper_booth", "seed=0,1", "optimizer=sgd,nosuch",
                          f"hydra.sweep.dir={tmp_path}/mine", check=False)
    assert proc.returncode == 2 and (tmp_path / "mine").is_dir()
    assert not list((tmp_path / "mine").rglob("summary.json"))


READ_YAML_EDGES = """\
lr: 1e-3
big: 1.0e+5
neg: -1E-2
under: 1_000
inf: .inf
ninf: -.inf
nan: .nan
int: 12
octal: 017
hex: 0x1F
bool: true
yes_word: yes
none: null
tilde: ~
missing: '???'
interp: ${now:%Y-%m-%d_%H-%M-%S_%f}
ref: ${optimizer.lr}
quoted_float: '1e-3'
quoted_int: "12"
date: 2024-01-02
stamp: 2024-01-02 10:11:12
sexagesimal: 1:20
list: [1, 1e-3, '2', null, .inf]
nested: {a: {b: 1e5, c: 'x'}}
"""


def _same_tree(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_tree(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_tree(x, y) for x, y in zip(a, b))
    return a == b


def test_read_yaml_reads_what_omegaconf_reads(tmp_path):
    """config_tree.read_yaml (libyaml, for reports over many runs) gives the values and types that
    ``OmegaConf.to_container(OmegaConf.load(path))`` gives: on the .hydra/*.yaml of real runs (a run and a sweep's
    jobs) and on the scalars OmegaConf reads its own way (1e-3 a float, dates and timestamps left strings)."""
    from omegaconf import OmegaConf

    from teleport_runner.config_tree import read_yaml

    crafted = tmp_path / "edges.yaml"
    crafted.write_text(READ_YAML_EDGES)
    teleport_train("experiment=paper_booth", "steps=3", "optimizer.lr=1e-3", f"hydra.run.dir={tmp_path}/run")
    teleport_train("-m", "experiment=paper_regression", "steps=2", "seed=0,1", "teleport.max_rel_drift=inf",
                   f"hydra.sweep.dir={tmp_path}/sweep")
    files = [crafted, *sorted(tmp_path.glob("run/.hydra/*.yaml")), *sorted(tmp_path.glob("sweep/*/.hydra/*.yaml")),
             tmp_path / "sweep" / "multirun.yaml"]
    assert len(files) == 1 + 3 + 6 + 1, files
    for path in files:
        expected = OmegaConf.to_container(OmegaConf.load(path))
        assert _same_tree(read_yaml(path), expected), path
    edges = read_yaml(crafted)
    assert edges["lr"] == 1e-3 and edges["date"] == "2024-01-02" and edges["quoted_float"] == "1e-3"


def test_an_in_process_run_leaves_the_callers_thread_count(run_config):
    """``run`` sets torch's threads for the run (recorded in summary.json) and gives the caller's count back, also
    when the run is refused."""
    from teleport_runner.errors import ConfigError

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        summary, _ = run_config("experiment=paper_booth", "threads=1", "plots=false", "logger=jsonl")
        assert summary["threads"] == 1 and torch.get_num_threads() == 2
        with pytest.raises(ConfigError):
            run_config("experiment=paper_booth", "threads=1", "optimizer.lr=-1")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
