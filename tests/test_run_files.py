"""The files every run writes, and their keys (the contract later tools and users rely on)."""
import io
import json

from conftest import read_jsonl

SUMMARY_KEYS = {"status", "final_loss", "steps", "n_teleports", "n_teleports_rejected", "max_rel_loss_drift",
                "time_total_s", "time_teleport_s", "time_descent_s", "steps_to_loss", "seed", "device", "dtype"}
TELEPORT_KEYS = {"step", "loss_before", "loss_after", "rel_loss_drift", "grad_norm_sq_before",
                 "grad_norm_sq_after", "accepted", "time_s"}


def test_run_files_and_keys(run_config):
    summary, run_dir = run_config("experiment=paper_booth", "plots=true", "seed=3")
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(10))
    assert all({"step", "loss", "grad_norm_sq", "time_s"} <= set(m) for m in metrics)
    assert all(b["time_s"] >= a["time_s"] for a, b in zip(metrics, metrics[1:]))
    (event,) = read_jsonl(run_dir / "teleports.jsonl")
    assert TELEPORT_KEYS <= set(event)
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(on_disk)
    assert on_disk["status"] == "completed" and on_disk["seed"] == 3 and on_disk["dtype"] == "float32"
    assert on_disk["steps_to_loss"] == summary["steps_to_loss"]
    assert set(on_disk["steps_to_loss"]) == {"1.0", "0.01"}
    # the first step whose loss is below each threshold, read back from the metrics
    for threshold, step in on_disk["steps_to_loss"].items():
        below = [m["step"] for m in metrics if m["loss"] < float(threshold)]
        assert step == (below[0] if below else None)
    assert on_disk["time_total_s"] >= on_disk["time_teleport_s"] > 0
    for name in ("curves.png", "trajectory.png"):
        assert (run_dir / name).stat().st_size > 10_000


def test_mini_batch_curves_show_validation(run_config, synthetic_mnist_root):
    """With validation at epoch ends the curves figure gets the validation loss and a fourth panel (accuracy)."""
    import matplotlib.image

    _, run_dir = run_config("problem=mnist", f"problem.data.root={synthetic_mnist_root}", "problem.n_train=200",
                            "problem.n_val=40", "problem.hidden=[16,10]", "epochs=2", "teleport=none", "plots=true")
    assert len(read_jsonl(run_dir / "val.jsonl")) == 2
    height, width = matplotlib.image.imread(run_dir / "curves.png").shape[:2]
    assert width / height > 4  # four panels side by side (three: ~3.6)


def test_log_every_thins_metrics(run_config):
    _, run_dir = run_config("experiment=paper_rosenbrock", "log_every=10", "steps=200")
    steps = [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")]
    assert steps == list(range(0, 200, 10))


def test_divergence_is_recorded_and_metrics_kept(run_config):
    summary, run_dir = run_config("problem=rosenbrock", "teleport=none", "optimizer.lr=0.05", "steps=100")
    assert summary["status"] == "diverged"
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert metrics[-1]["loss"] in ("inf", "nan")          # non-finite values are written as strings
    assert all(isinstance(m["loss"], float) for m in metrics[:-1])
    assert f"step {metrics[-1]['step']}" in summary["message"]
    assert summary["steps_done"] == metrics[-1]["step"]  # not the later step at which the loop noticed


def test_the_default_run_completes_and_teleporting_helps(run_config):
    """`make train` with no overrides: the first command a user runs must not diverge."""
    summary, _ = run_config()
    baseline, _ = run_config("teleport=none")
    assert summary["status"] == "completed" and summary["n_teleports"] == 9
    assert summary["n_teleports_rejected"] == 0
    assert summary["final_loss"] < 1e-3 < 0.1 < baseline["final_loss"]


def test_logged_grad_norm_is_the_full_gradient_norm():
    """The buffer splits tensors between a BLAS dot (large) and one fused norm (small); the logged value must
    still be the squared norm of the whole gradient, step by step."""
    import torch

    from teleport_runner.loop import MetricBuffer

    gen = torch.Generator().manual_seed(0)
    shapes = [(300, 200), (300,), (10, 300), (MetricBuffer.DOT_MIN_NUMEL,)]  # two large, two small
    params = [torch.zeros(s, requires_grad=True) for s in shapes]
    buffer, expected = MetricBuffer(), []
    for step in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        expected.append(sum(float(p.grad.double().square().sum()) for p in params))
        buffer.add(step, torch.tensor(1.0), params, elapsed=0.1 * step)
    rows, losses = buffer.drain()
    assert [r["step"] for r in rows] == [0, 1, 2] and len(buffer) == 0 and len(losses) == 3
    for row, value in zip(rows, expected):
        assert abs(row["grad_norm_sq"] - value) <= 1e-5 * value


def test_console_summary_wraps_the_run_directory_instead_of_cutting_it(tmp_path):
    from rich.console import Console

    from teleport_runner.logging.console import ConsoleSink

    run_dir = tmp_path / "outputs" / "runs" / ("a_long_run_directory_name_" * 3)
    sink = ConsoleSink(progress=False, run_dir=str(run_dir))
    sink.console = Console(width=60, file=io.StringIO())
    sink.close({"status": "completed", "final_loss": 0.5, "steps": 10, "time_total_s": 1.0})
    text = sink.console.file.getvalue()
    assert "…" not in text
    # the path's pieces, read back across the wrapped rows, give the whole path
    joined = "".join(line.split("│")[2].strip() for line in text.splitlines() if line.count("│") == 3
                     and (line.split("│")[1].strip() in ("files", "")))
    assert str(run_dir) in joined
