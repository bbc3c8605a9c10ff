"""The batch-size study's machinery: LR grids with extra seeds, the early stop of hopeless runs,
steps to target, and the shared recipe's options (label smoothing, zero-initialised residual
blocks, no weight decay on biases and norm weights)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

import hyperparams
from config import ConfigError, load_config, run_differences, validate
from data import load_cifar10
from models import MODELS, build_model
from choosing import at_grid_edge, best_grid_run, steps_to_target
from results import markdown
from tests.conftest import make_image_folder, run_main, run_script, train_in_process
from trainer import Trainer, build_optimizer, build_scheduler
from checkpoints import load_checkpoint
from utils import Process, format_duration

GRID_PRESET = """
SWEEP_BATCH_SIZES = [16]
SWEEP_WITH_LARS = [True]
SWEEP_PEAK_LRS = [1e6, 0.02] if BATCH_SIZE == 16 else None  # 1e6: a run that diverges
SWEEP_EXTRA_SEEDS = [1]
MODEL = "resnet20"
NUM_EPOCHS = 2
WARMUP_EPOCHS = 1
WARMUP_MULTIPLIER = 4.0
NUM_THREADS = 1
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("study") / "data", per_class_train=32, per_class_test=10)


@pytest.mark.slow
def test_a_grid_sweep_runs_each_peak_lr_then_the_best_with_extra_seeds_and_resumes(folder, tmp_path, monkeypatch,
                                                                                    capsys):
    preset = tmp_path / "grid.py"
    preset.write_text(GRID_PRESET)
    args = [str(preset), f"--data_dir={folder}", f"--checkpoint_dir={tmp_path / 'ck'}",
            f"--results_dir={tmp_path / 'results'}"]
    with monkeypatch.context() as patched:  # the sweep in this process; the second one below is a real one
        train_in_process(patched)
        status, _, stderr = run_main("sweep.py", *args, capsys=capsys)
    assert status == 0, stderr
    results = json.loads((tmp_path / "results" / "grid" / "results.json").read_text())
    runs = [(c["role"], c["peak_lr"], c["seed"], c["status"]) for c in results["cells"]]
    assert runs == [("grid", 1e6, 0, "diverged"), ("grid", 0.02, 0, "finished"), ("seed", 0.02, 1, "finished")]
    for cell in results["cells"]:
        assert cell["hyperparams"]["LR"] * 4.0 == pytest.approx(cell["peak_lr"]), "the grid sets the peak LR"
        assert cell["hyperparams"]["SEED"] == cell["seed"] and cell["steps_per_epoch"] == 96 // 16
    seeded = load_checkpoint(str(tmp_path / "ck" / "grid" / "lr0.02-seed1" / "withLars-16.pth"))
    unseeded = load_checkpoint(str(tmp_path / "ck" / "grid" / "lr0.02" / "withLars-16.pth"))
    assert not torch.equal(seeded["model"]["conv1.weight"], unseeded["model"]["conv1.weight"])

    text = (tmp_path / "results" / "grid" / "results.md").read_text()
    assert text == markdown(results)
    best_row = next(line for line in text.splitlines() if line.startswith("| 16 |"))
    accuracies = [c["final_top1"] for c in results["cells"][1:]]
    mean = sum(accuracies) / 2
    assert f"| 0.02 ({0.02 * hyperparams.TRUST_COEF:.3g}) | {mean:.2f} ± " in best_row and "(n=2)" in best_row
    assert "| 16 | LARS | 1e+06" in text and "(nan)" in text
    total = sum(c["time_to_train"] for c in results["cells"])
    assert f"3 runs, {format_duration(total)} of training in all." in text
    for name in ("lr_grid.png", "batch_size.png", "steps.png", "accuracy.png"):
        assert (tmp_path / "results" / "grid" / name).stat().st_size > 0

    again = run_script("sweep.py", *args)
    assert again.returncode == 0 and again.stdout.count("skipped") == 3 and "train.py" not in again.stdout
    more = run_script("sweep.py", *args, "--sweep_extra_seeds=[1, 2]")
    assert more.stdout.count("train.py") == 1 and "--seed=2" in more.stdout, "only the new seed runs"


@pytest.mark.slow
def test_a_run_whose_loss_exceeds_the_threshold_stops_after_that_epoch_as_diverged(folder, tmp_path):
    args = ["--model=resnet20", "--batch_size=16", "--num_epochs=3", "--warmup_epochs=0", "--num_threads=1",
            f"--data_dir={folder}", f"--checkpoint_dir={tmp_path}", "--divergence_loss=0.5"]
    result = run_script("train.py", *args)
    assert result.returncode == 3 and "exceeds DIVERGENCE_LOSS = 0.5" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    checkpoint = load_checkpoint(str(tmp_path / "noLars-16.pth"))
    assert checkpoint["diverged"] and checkpoint["epoch"] == 1
    (row,) = checkpoint["history"]
    assert row["train_loss"] > 0.5 and not math.isnan(row["test_acc"]), "the stopping epoch is evaluated"
    again = run_script("train.py", *args, "--resume=True")
    assert again.returncode == 2 and "diverged" in again.stderr
    below = run_script("train.py", *args[:-2], f"--checkpoint_dir={tmp_path / 'b'}", "--num_epochs=1")
    assert below.returncode == 0, "the default threshold, 10 x ln 10, is far above a working run's loss"


def test_steps_to_target_reads_the_first_epoch_that_reached_it():
    history = [{"epoch": e, "test_acc": acc} for e, acc in enumerate([30.0, math.nan, 55.0, 71.0, 60.0], 1)]
    cell = {"history": history, "steps_per_epoch": 6}
    assert steps_to_target(cell, 50) == 3 * 6
    assert steps_to_target(cell, 70) == 4 * 6
    assert steps_to_target(cell, 80) is None
    assert steps_to_target({"history": history, "steps_per_epoch": None}, 50) is None, "an old record"


def test_the_best_run_comes_from_the_base_seed_grid():
    def run(role, status, final, accs):
        return {"role": role, "status": status, "final_top1": final, "steps_per_epoch": 10,
                "history": [{"epoch": e, "test_acc": a} for e, a in enumerate(accs, 1)]}

    slow_best = run("grid", "finished", 75.0, [40, 60, 75])
    fast = run("grid", "finished", 72.0, [55, 72, 72])
    diverged = run("grid", "diverged", 90.0, [90])
    lucky_seed = run("seed", "finished", 99.0, [99])
    runs = [slow_best, fast, diverged, lucky_seed]
    assert best_grid_run(runs) is slow_best, "a diverged run or an extra seed is never the best"
    assert best_grid_run([lucky_seed, run("grid", "not run", None, [])]) is None


def test_a_setting_missing_from_an_older_record_counts_as_its_default():
    settings = vars(load_config([]))
    old = {k: v for k, v in settings.items() if k != "LABEL_SMOOTHING"}
    assert run_differences(old, settings) == []
    assert run_differences(old, {**settings, "LABEL_SMOOTHING": 0.1}) == ["LABEL_SMOOTHING"]
    assert run_differences(settings, {**settings, "DATA_DIR": "elsewhere", "SWEEP_PEAK_LRS": [1.0]}) == []


@pytest.mark.parametrize("name", sorted(MODELS))
def test_zero_init_residual_makes_every_block_start_as_its_shortcut(name):
    torch.manual_seed(0)
    model = build_model(name, zero_init_residual=True).eval()
    blocks = [m for m in model.modules() if hasattr(m, "downsample") or hasattr(m, "last_bn")]
    assert blocks
    x = torch.randn(2, 64, 8, 8)
    for block in blocks:
        bn = block.last_bn if hasattr(block, "last_bn") else getattr(block, "bn3", None) or block.bn2
        assert torch.count_nonzero(bn.weight) == 0
    cifar_block = build_model("resnet20", zero_init_residual=True).blocks[-1].eval()
    assert torch.equal(cifar_block(x), F.relu(x))
    default = build_model(name)
    assert all(torch.count_nonzero(m.weight) > 0 for m in default.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("with_lars", [False, True])
def test_excluding_biases_and_norm_weights_removes_their_decay_for_both_optimizers(with_lars):
    model = build_model("resnet20")
    cfg = load_config([f"--with_lars={with_lars}", "--exclude_bn_bias=True"])
    decayed, excluded = build_optimizer(model, cfg).param_groups
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in excluded["params"])
    assert excluded["weight_decay"] == 0.0 and decayed["weight_decay"] > 0.0
    assert len(decayed["params"]) + len(excluded["params"]) == len(list(model.parameters()))
    if with_lars:
        assert excluded["adapt"] is False and decayed["adapt"] is True
    (single,) = build_optimizer(model, load_config([f"--with_lars={with_lars}"])).param_groups
    assert len(single["params"]) == len(list(model.parameters())) and single["weight_decay"] > 0.0


@pytest.mark.slow
def test_label_smoothing_is_applied_to_the_training_loss(folder):
    data = load_cifar10(folder)
    losses = {}
    for smoothing in (0.0, 0.3):
        cfg = load_config(["--model=resnet20", "--batch_size=16", f"--label_smoothing={smoothing}", "--amp=False"])
        trainer = Trainer(cfg, Process(), torch.device("cpu"), data)
        images, labels = next(trainer.batches.train_epoch(0, cfg.SEED, cfg.BATCH_SIZE))
        with torch.no_grad():
            expected = F.cross_entropy(trainer.model.train()(images), labels, label_smoothing=smoothing)
        torch.manual_seed(0)
        losses[smoothing] = trainer.train_step(images, labels).item()
        assert losses[smoothing] == pytest.approx(expected.item(), rel=1e-5)
    assert losses[0.3] != pytest.approx(losses[0.0], rel=1e-3)


def test_a_best_at_the_edge_of_a_grid_of_three_or_more_is_flagged():
    def run(peak, status="finished", role="grid"):
        return {"peak_lr": peak, "status": status, "role": role}

    grid = [run(0.1), run(0.2), run(0.4), run(0.8, "diverged")]
    assert not at_grid_edge(grid[2], grid), "the largest LR diverged: 0.4 is inside"
    assert at_grid_edge(grid[0], grid) and not at_grid_edge(grid[1], grid)
    assert not at_grid_edge(grid[0], grid[:2]), "two LRs have no inside"
    assert at_grid_edge(grid[0], [*grid, run(0.05, role="seed")]), "extra seeds do not widen the grid"


@pytest.mark.parametrize("warmup_epochs, steps_per_epoch, peak_step", [(5 / 3, 6, 10), (0, 6, 0), (2, 390, 780)])
def test_a_fractional_warm_up_reaches_the_peak_at_the_rounded_step(warmup_epochs, steps_per_epoch, peak_step):
    cfg = load_config([f"--warmup_epochs={warmup_epochs}", "--warmup_multiplier=50", "--lr=0.002",
                       "--num_epochs=20", "--end_lr=0"])
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.LR)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    lrs = []
    for _ in range(peak_step + 2):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs.index(max(lrs)) == peak_step and max(lrs) == pytest.approx(0.1)


@pytest.mark.parametrize("warmup_epochs", [0, 2])
def test_step_milestones_decay_at_those_epochs_counted_from_the_start(warmup_epochs):
    # He et al.'s schedule: LR / 10 after epochs 91 and 137 of 182, here on 3 steps per epoch
    cfg = load_config(["--lr_schedule=step", "--step_milestones=[91, 137]", "--num_epochs=182",
                       f"--warmup_epochs={warmup_epochs}", "--warmup_multiplier=2", "--lr=0.05"])
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.LR)
    scheduler = build_scheduler(optimizer, cfg, 3)
    lrs = []
    for _ in range(182 * 3):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    warmup = warmup_epochs * 3
    expected = [0.05 * (1 + t / warmup) if t < warmup else 0.1 * 0.1 ** ((t >= 91 * 3) + (t >= 137 * 3))
                for t in range(182 * 3)]
    assert lrs == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("argv, match", [
    (["--step_milestones=[91, 137]"], 'unless LR_SCHEDULE = "step"'),
    (["--lr_schedule=step", "--step_milestones=[137, 91]"], "increasing epochs"),
    (["--lr_schedule=step", "--step_milestones=[91, 91]"], "increasing epochs"),
    (["--lr_schedule=step", "--step_milestones=[3]", "--warmup_epochs=5"], "after WARMUP_EPOCHS"),
    (["--lr_schedule=step", "--step_milestones=[200]"], "before NUM_EPOCHS"),
    (["--lr_schedule=step", "--step_milestones=[]"], "increasing epochs"),
])
def test_step_milestones_that_cannot_run_are_refused_naming_the_setting(argv, match):
    with pytest.raises(ConfigError, match=match):
        validate(load_config(argv), 1, ("resnet50_imagenet",))
