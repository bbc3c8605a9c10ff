"""Benchmarks kept from rotting: benchmarks/gpu_check.py in its CPU dry run (every part runs and
lands in the report, so the check is ready for the few minutes a GPU is lent), and
benchmarks/evaluation_cost.py on a tiny folder, and every benchmark's --help and refusals."""

import json
import math
import sys
import tarfile
import types
from pathlib import Path

import pytest
import torch

from tests.conftest import make_image_folder, run_script


@pytest.mark.slow
def test_the_gpu_check_dry_run_measures_every_part_and_writes_its_report(tmp_path):
    folder = make_image_folder(tmp_path / "cifar10", per_class_train=32, per_class_test=4)
    archive = tmp_path / "cifar10-jpg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar10")
    out = tmp_path / "out"
    result = run_script("benchmarks/gpu_check.py", f"--archive={archive}", f"--out={out}", "--dry-run", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    raw = json.loads((out / "raw.json").read_text())
    assert raw["errors"] == {} and list(raw["seconds"]) == ["machine", "data", "optimizer", "training", "tests"]
    assert raw["data"].endswith("cifar10") and raw["data"] != str(folder), "unpacked from the archive"
    assert raw["tests"]["exit_status"] == 0 and "skipped" in raw["tests"]["summary"], "the CUDA tests skip on a CPU"
    assert "SKIPPED" in (out / "tests.log").read_text(), "the tests' whole verbose output is kept"
    steps = raw["optimizer"]
    assert {"LARS multi-tensor (default)", "LARS single-tensor", "SGD foreach"} <= set(steps["ms"])
    assert set(steps["ms"]) | set(steps["unavailable"]) == {"LARS multi-tensor (default)", "LARS single-tensor",
                                                            "SGD foreach", "SGD fused", "timm Lars"}
    assert steps["tensors"] == 161, "torchvision ResNet-50's parameters"
    rows = raw["training"]
    assert [(r["batch_size"], r["optimizer"]) for r in rows] == [(32, "SGD"), (32, "LARS"), (64, "SGD"), (64, "LARS")]
    assert all(len(r["epoch_seconds"]) == len(r["losses"]) == 3 and not r["diverged"] for r in rows)
    assert all(r["images_per_second"] > 0 for r in rows)
    assert all((r["lars_over_sgd"] is None) == (r["optimizer"] == "SGD") for r in rows)
    report = (out / "report.md").read_text()
    for heading in ("## CUDA tests", "## optimizer.step()", "## Training: configs/attempt2.py"):
        assert heading in report
    assert result.stdout.rstrip().endswith(report.rstrip().splitlines()[-1])


def test_without_cuda_the_real_check_refuses_in_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_script("benchmarks/gpu_check.py", f"--data_dir={tmp_path}", f"--out={tmp_path / 'out'}")
    assert result.returncode == 2 and "no CUDA device" in result.stderr and "--dry-run" in result.stderr


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
def test_a_benchmark_answers_help_and_refuses_bad_input_in_one_line(script):
    help_ = run_script(f"benchmarks/{script}.py", "--help")
    assert help_.returncode == 0 and f"benchmarks/{script}.py" in help_.stdout and "--lr=" in help_.stdout, help_.stderr
    bad = run_script(f"benchmarks/{script}.py", "--batch_sise=128")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1, bad.stderr
    assert "batch_size" in bad.stderr and bad.stdout == "", "refused at once, naming the setting meant"


def test_the_evaluation_cost_benchmark_refuses_a_step_count_that_is_not_a_positive_integer():
    bad = run_script("benchmarks/evaluation_cost.py", "--steps=0")
    assert bad.returncode == 2 and bad.stderr == "error: --steps='0' is not allowed: must be a positive integer\n"


def test_a_diverged_run_is_reported_as_diverged_not_timed():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from gpu_check import training_row

    cfg = types.SimpleNamespace(BATCH_SIZE=8192, WITH_LARS=False, MODEL="resnet50_imagenet")
    cpu = torch.device("cpu")
    # A non-finite loss ends the epoch at its first step: 0.04 s for "6 steps" is no speed.
    diverged = training_row(cfg, 6, [2.3, math.nan, math.nan], [0.75, 0.04, 0.04], cpu)
    assert diverged["diverged"] and diverged["ms_per_step"] is None and diverged["images_per_second"] is None
    healthy = training_row(cfg, 6, [2.3, 2.1, 2.0], [0.75, 0.6, 0.6], cpu)
    assert not healthy["diverged"] and healthy["ms_per_step"] == 100.0 and healthy["images_per_second"] == 81920.0
