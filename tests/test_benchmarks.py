"""Benchmarks kept from rotting: benchmarks/gpu_check.py in its CPU dry run (every part runs and
lands in the report, so the check is ready for the few minutes a GPU is lent), and
benchmarks/evaluation_cost.py on a tiny folder, and every benchmark's --help and refusals."""

import importlib
import json
import math
import os
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, make_image_folder, run_script


@pytest.mark.slow
def test_the_gpu_check_dry_run_measures_every_part_and_writes_its_report(tmp_path):
    # 192 training images: the 200-epoch run's batch of 128 beside a validation hold-out of 30
    folder = make_image_folder(tmp_path / "cifar10", per_class_train=64, per_class_test=4)
    archive = tmp_path / "cifar10-jpg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar10")
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "benchmarks/gpu_check.py", f"--archive={archive}", f"--out={out}",
                                "--dry-run"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout = ""
    for line in process.stdout:  # a check cut off after a part still has that part's numbers on disk
        stdout += line
        if line.startswith("gpu_check: optimizer done"):
            early = json.loads((out / "raw.json").read_text())
            assert list(early["seconds"]) == ["machine", "data", "optimizer"] and "ms" in early["optimizer"]
            assert "## optimizer.step()" in (out / "report.md").read_text()
    stderr = process.stderr.read()
    assert process.wait(timeout=600) == 0 and "early" in locals(), stderr[-3000:]
    raw = json.loads((out / "raw.json").read_text())
    assert not os.path.exists(raw["data"]), "the unpacked copy is removed"
    assert raw["errors"] == {} and list(raw["seconds"]) == ["machine", "data", "optimizer", "training", "ghost_bn", "tests",
                                                            "run200"]
    ghost = raw["ghost_bn"]
    assert (ghost["batch_size"], ghost["micro_batch_size"]) == (64, 16) and ghost["ghost_over_loop"] > 0
    losses = ghost["first_loss"]
    assert losses["ghost BN"] == pytest.approx(losses["micro-batch loop"], rel=0.02), "the same step either way"
    assert raw["data"].endswith("cifar10") and raw["data"] != str(folder), "unpacked from the archive"
    assert raw["tests"]["exit_status"] == 0 and "skipped" in raw["tests"]["summary"], "the CUDA tests skip on a CPU"
    assert "SKIPPED" in (out / "tests.log").read_text(), "the tests' whole verbose output is kept"
    steps = raw["optimizer"]
    lars_rows = {"LARS multi-tensor (default)", "LARS multi-tensor, capturable", "LARS single-tensor"}
    assert lars_rows | {"SGD foreach"} <= set(steps["ms"])
    assert set(steps["ms"]) | set(steps["unavailable"]) == lars_rows | {"SGD foreach", "SGD fused", "timm Lars"}
    assert steps["tensors"] == 161, "torchvision ResNet-50's parameters"
    rows = raw["training"]
    assert [(r["batch_size"], r["optimizer"], r["cuda_graphs"]) for r in rows] == [
        (batch, optimizer, graphs) for batch in (32, 64) for optimizer, graphs in (("SGD", False), ("LARS", False),
                                                                                 ("LARS", True))]
    assert all(len(r["epoch_seconds"]) == len(r["losses"]) == 2 and not r["diverged"] for r in rows)
    assert all(r["images_per_second"] > 0 for r in rows)
    assert all((r["lars_over_sgd"] is None) == (r["optimizer"] == "SGD" or r["cuda_graphs"]) for r in rows)
    assert all((r["graphs_over_eager"] is None) != r["cuda_graphs"] for r in rows)
    for eager, graphs in zip(rows[1::3], rows[2::3]):  # the same LARS run, compiled: the same first loss,
        assert graphs["losses"][0] == pytest.approx(eager["losses"][0], rel=1e-3)  # then bf16 round-off grows
        assert graphs["losses"][1] == pytest.approx(eager["losses"][1], rel=0.05)
    run = raw["run200"]
    assert run["exit_status"] == 0 and run["epochs_done"] == 2 and run["final"]["test_top1"] is not None
    assert run["settings_unlike_the_cpu_run"] == ["NUM_EPOCHS", "VALIDATION_SIZE", "WARMUP_EPOCHS"], \
        "the dry run's sizes, and nothing else"
    assert run["cpu"]["epochs"] == 200 and run["cpu"]["test_top1"] > 80, "the CPU run it stands beside"
    report = (out / "report.md").read_text()
    for heading in ("## CUDA tests", "## optimizer.step()", "## Training: configs/attempt2.py",
                    "## Ghost BN against micro-batches", "## 200 epochs of the study's batch-128 LARS cell"):
        assert heading in report
    assert stdout.rstrip().endswith(report.rstrip().splitlines()[-1])


def test_without_cuda_the_real_check_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    gpu_check = importlib.import_module("gpu_check")
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main([f"--data_dir={tmp_path}", f"--out={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: no CUDA device") and "--dry-run" in err and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_evaluation_cost_benchmark_times_every_part_side_by_side(tmp_path):
    folder = make_image_folder(tmp_path / "data", per_class_train=32, per_class_test=4)
    result = run_script("benchmarks/evaluation_cost.py", f"--data_dir={folder}", "--model=resnet20", "--batch_size=16",
                        "--validation_size=12", "--precise_bn=2", "--micro_batch_size=8", "--steps=2", "--rounds=1",
                        "--num_epochs=10", "--warmup_epochs=1", "--eval_every=3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "84 training, 12 validation, 12 test images; PRECISE_BN = 2" in result.stdout
    assert "evaluations / run (10 epochs, EVAL_EVERY = 3)" in result.stdout
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("| 16 |")]
    cells = [float(c) for c in row.strip("|").split("|")]
    assert cells[1] == 84 // 16 and all(c > 0 for c in cells[2:]), row
    per_epoch, per_run = cells[6], cells[7]
    assert abs(per_run - per_epoch * 4 / 10) <= 0.001, row  # evaluated after epochs 3, 6, 9 and 10


@pytest.mark.parametrize("script", ["evaluation_cost", "train_throughput", "optimizer_step"])
def test_a_benchmark_answers_help_and_refuses_bad_input_in_one_line(script, monkeypatch, capsys):
    status, out, err = run_benchmark(script, "--help", monkeypatch=monkeypatch, capsys=capsys)
    assert status == 0 and f"benchmarks/{script}.py" in out and "--lr=" in out, err
    status, out, err = run_benchmark(script, "--batch_sise=128", monkeypatch=monkeypatch, capsys=capsys)
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "batch_size" in err and out == "", "refused at once, naming the setting meant"


def run_benchmark(script, *argv, monkeypatch, capsys):
    """A benchmark's command line in this process, as benchmarks/cli.py runs it but for the
    signal handlers, which stay pytest's: (exit status, stdout, stderr)."""
    from config import exit_with_help_if_asked

    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    cli, module = importlib.import_module("cli"), importlib.import_module(script)
    monkeypatch.setattr(cli, "start_command", exit_with_help_if_asked)
    try:
        status = cli.run(module.main, module.__doc__, list(argv)) or 0
    except SystemExit as e:
        status = e.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_evaluation_cost_benchmark_refuses_a_step_count_that_is_not_a_positive_integer(monkeypatch, capsys):
    status, _, err = run_benchmark("evaluation_cost", "--steps=0", monkeypatch=monkeypatch, capsys=capsys)
    assert status == 2 and err == "error: --steps='0' is not allowed: must be a positive integer\n"


def test_a_diverged_run_is_reported_as_diverged_not_timed():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from gpu_check import training_row

    cfg = types.SimpleNamespace(BATCH_SIZE=8192, WITH_LARS=False, MODEL="resnet50_imagenet", CUDA_GRAPHS=False)
    cpu = torch.device("cpu")
    # A non-finite loss ends the epoch at its first step: 0.04 s for "6 steps" is no speed.
    diverged = training_row(cfg, 6, [2.3, math.nan, math.nan], [0.75, 0.04, 0.04], cpu)
    assert diverged["diverged"] and diverged["ms_per_step"] is None and diverged["images_per_second"] is None
    healthy = training_row(cfg, 6, [2.3, 2.1, 2.0], [0.75, 0.6, 0.6], cpu)
    assert not healthy["diverged"] and healthy["ms_per_step"] == 100.0 and healthy["images_per_second"] == 81920.0


@pytest.mark.slow
def test_the_per_test_time_limit_fails_a_hanging_test_by_name_and_goes_on(tmp_path):
    # What the GPU check's tests part relies on, without pytest-timeout: $TEST_TIME_LIMIT.
    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(60)\n\n"
                                           "def test_after():\n    pass\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
                             str(tmp_path / "test_hang.py")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TEST_TIME_LIMIT": "2"})
    assert "over the 2 s limit per test" in result.stdout and "1 failed, 1 passed" in result.stdout, result.stdout
