"""sweep.py's bookkeeping on a tiny configuration: two cells, a few hundred images."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from figures import plot
from results import markdown
from tests.conftest import ROOT, NoBatchNorm, kill_when, make_image_folder, run_main, run_script, train_in_process
from trainer import Trainer
from config import load_config
from data import load_cifar10
from utils import Process

CELLS = ["--sweep_batch_sizes=[16, 32]", "--sweep_with_lars=[False]", "--model=resnet20",
         "--warmup_epochs=0", "--num_threads=1"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("sweep") / "data", per_class_train=64, per_class_test=10)


@pytest.fixture(scope="module")
def swept(folder, tmp_path_factory):
    """The two cells swept for an epoch each, as a user runs it: the folder of its checkpoints
    (ck/) and results (results/default/), which the tests below leave as they are."""
    root = tmp_path_factory.mktemp("swept")
    first = run_script("sweep.py", *sweep_args(folder, root, "--num_epochs=1"))
    assert first.returncode == 0, first.stderr
    return root


def sweep_args(folder, tmp_path, *extra):
    return [*CELLS, f"--data_dir={folder}", f"--checkpoint_dir={tmp_path / 'ck'}",
            f"--results_dir={tmp_path / 'results'}", *extra]


def read(tmp_path, preset):
    with open(tmp_path / "results" / preset / "results.json") as f:
        return json.load(f)


def png_width(path):
    with open(path, "rb") as f:
        return int.from_bytes(f.read(24)[16:20], "big")  # the IHDR chunk's width field


def table_rows(text):
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| Batch")]


@pytest.mark.slow
def test_sweep_runs_each_cell_once_and_writes_matching_tables_and_figures(folder, swept, tmp_path):
    results = read(swept, "default")
    assert [(c["batch_size"], c["status"]) for c in results["cells"]] == [(16, "finished"), (32, "finished")]
    for name in ("results.md", "accuracy.png", "batch_size.png"):
        assert os.path.getsize(swept / "results" / "default" / name) > 0
    both = {**results, "cells": results["cells"] + [{**c, "with_lars": True} for c in results["cells"]]}
    plot(str(tmp_path / "both"), both)  # the same figure with a LARS panel beside
    single, double = (png_width(d / "accuracy.png") for d in (swept / "results" / "default", tmp_path / "both"))
    assert single < 0.75 * double, "SGD cells only: one panel"

    text = (swept / "results" / "default" / "results.md").read_text()
    assert text == markdown(results)
    rows = table_rows(text)
    assert [r[0] for r in rows] == ["16", "32"]
    for row, cell in zip(rows, results["cells"]):
        assert float(row[1]) == pytest.approx(cell["hyperparams"]["LR"])
        assert float(row[2]) == pytest.approx(cell["final_top1"], abs=0.005)
        assert cell["final_top1"] == cell["history"][-1]["test_acc"]

    again = run_script("sweep.py", *sweep_args(folder, swept, "--num_epochs=1"))
    assert again.returncode == 0
    assert again.stdout.count("skipped") == 2 and "train.py" not in again.stdout
    assert read(swept, "default")["cells"] == results["cells"]


@pytest.mark.slow
def test_a_diverged_cell_is_recorded_as_nan_and_the_sweep_goes_on(folder, tmp_path):
    preset = tmp_path / "explode.py"
    preset.write_text("LR = 1e30 if BATCH_SIZE == 16 else 0.01\n")  # the first cell diverges
    result = run_script("sweep.py", str(preset), *sweep_args(folder, tmp_path, "--num_epochs=2"))
    assert result.returncode == 0, result.stderr
    cells = read(tmp_path, "explode")["cells"]
    assert [c["status"] for c in cells] == ["diverged", "finished"]
    assert math.isnan(cells[0]["history"][-1]["test_acc"])
    rows = table_rows((tmp_path / "results" / "explode" / "results.md").read_text())
    assert rows[0][2].endswith("(nan)") and "(nan)" not in rows[1][2]


@pytest.mark.slow
def test_an_interrupted_cell_resumes_from_its_checkpoint(folder, tmp_path):
    args = sweep_args(folder, tmp_path, "--num_epochs=3", "--sweep_batch_sizes=[16]")
    cell = [*args, "--batch_size=16", "--with_lars=False", f"--checkpoint_dir={tmp_path / 'ck' / 'default'}"]
    process = subprocess.Popen([sys.executable, "train.py", *cell, "--device=cpu"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(process, str(tmp_path / "ck" / "default" / "noLars-16.pth"), 1, 0.0)
    result = run_script("sweep.py", *args)
    assert result.returncode == 0, result.stderr
    assert "--resume=True" in result.stdout and "resumed at epoch" in result.stdout
    (cell_result,) = read(tmp_path, "default")["cells"]
    assert cell_result["status"] == "finished" and [r["epoch"] for r in cell_result["history"]] == [1, 2, 3]


@pytest.mark.parametrize("setting, name", [("--sweep_batch_sizes=[16, 0]", "BATCH_SIZE"),
                                           ("--sweep_batch_sizes=[16, 16]", "SWEEP_BATCH_SIZES"),
                                           ("--sweep_with_lars=[]", "SWEEP_WITH_LARS")])
def test_bad_sweep_settings_exit_2_before_any_run(folder, tmp_path, setting, name, capsys):
    from tests.conftest import run_main

    status, _, stderr = run_main("sweep.py", *sweep_args(folder, tmp_path, setting), capsys=capsys)
    assert status == 2 and stderr.startswith(f"error: {name} ")
    assert not (tmp_path / "ck").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize("attempt, schedule, he_init", [(1, "poly", False), (2, "poly", True),
                                                       (3, "step", False), (4, "step", True)])
def test_attempt_presets_resolve_to_the_original_readmes_recipes(attempt, schedule, he_init):
    import sweep

    argv = [os.path.join(ROOT, "configs", f"attempt{attempt}.py")]
    plan = list(sweep.cells(argv, load_config(argv), f"attempt{attempt}"))
    assert [(b, lars) for b, lars, _, _ in plan] == [(128 * 2**i, lars) for i in range(7) for lars in (False, True)]
    for batch_size, with_lars, _, cfg in plan:
        k = batch_size / 128
        assert (cfg.BATCH_SIZE, cfg.WITH_LARS, cfg.MODEL) == (batch_size, with_lars, "resnet50_imagenet")
        assert cfg.LR == pytest.approx(0.05 if attempt == 1 else 0.05 * k)
        assert cfg.LR * cfg.WARMUP_MULTIPLIER == pytest.approx(0.1 * k), "linear scaling after warm-up"
        assert (cfg.NUM_EPOCHS, cfg.WARMUP_EPOCHS, cfg.MOMENTUM) == (200, 5, 0.9)
        assert (cfg.WEIGHT_DECAY, cfg.LARS_WEIGHT_DECAY) == (5e-4, 5e-3)
        assert (cfg.LR_SCHEDULE, cfg.HE_INIT) == (schedule, he_init)
        if schedule == "poly":
            assert cfg.END_LR == pytest.approx(1e-5 if attempt == 1 else 1e-5 * k)
        else:
            assert (cfg.STEP_EPOCHS, cfg.STEP_GAMMA) == (50, 0.1)


def recalibrate(model_name, folder):
    data = load_cifar10(folder)
    trainer = Trainer(load_config([f"--model={model_name}", "--batch_size=16", "--precise_bn=3"]),
                      Process(), torch.device("cpu"), data)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.recompute_bn_statistics()
    after = trainer.model.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}, trainer


@pytest.mark.slow
def test_precise_bn_changes_only_batch_norm_buffers(folder):
    changed, trainer = recalibrate("resnet20", folder)
    buffers = {name for name, _ in trainer.model.named_buffers()}
    assert changed and changed <= buffers
    assert trainer.model.bn1.momentum == 0.1, "momentum restored after recalibration"


@pytest.mark.slow
def test_precise_bn_is_a_no_op_without_batch_norm(folder, monkeypatch):
    import models
    monkeypatch.setitem(models.MODELS, "no_bn", NoBatchNorm)
    changed, _ = recalibrate("no_bn", folder)
    assert changed == set()


def test_times_from_different_machines_are_labelled_with_their_machines():
    def cell(batch_size, cpu):
        machine = {"cpu": cpu, "cores": 2, "device": "cpu", "accelerator": "none", "processes": 1, "torch": "2"}
        return {"batch_size": batch_size, "with_lars": False, "status": "finished", "final_top1": 50.0,
                "time_to_train": 60.0, "hyperparams": {"LR": 0.1}, "history": [], "machine": machine}

    results = {"preset": "p", "command": "c", "cells": [cell(128, "Xeon"), cell(256, "EPYC")]}
    text = markdown(results)
    assert [row[3] for row in table_rows(text)] == ["1m 00s (b)", "1m 00s (a)"]
    assert "(a) Machine: EPYC," in text and "(b) Machine: Xeon," in text
    assert "more than one machine description" not in text
    moved = cell(512, "Xeon")
    moved["machines"] = [{"from_epoch": 1, **moved.pop("machine")}, {"from_epoch": 5, **cell(0, "EPYC")["machine"]}]
    text = markdown({**results, "cells": [*results["cells"], moved]})
    assert [row[3] for row in table_rows(text)] == ["1m 00s (b)", "1m 00s (a)", "1m 00s (b, a)"]
    assert "the run trained under more than one machine description" in text
    assert "results.json gives the epoch from which each trained it" in text
    results["cells"][1] = cell(256, "Xeon")
    text = markdown(results)
    assert [row[3] for row in table_rows(text)] == ["1m 00s", "1m 00s"] and "\nMachine: Xeon," in text


@pytest.mark.slow
def test_val_prints_a_results_folders_tables(swept, tmp_path):
    shown = run_script("val.py", f"--results={swept / 'results' / 'default'}")
    assert shown.returncode == 0
    assert shown.stdout == (swept / "results" / "default" / "results.md").read_text()
    missing = run_script("val.py", f"--results={tmp_path / 'nowhere'}")
    assert missing.returncode == 1 and missing.stderr.startswith("error: no readable results")


@pytest.mark.slow
def test_cells_recorded_in_results_json_are_not_run_again_without_checkpoints(folder, swept, tmp_path, monkeypatch,
                                                                             capsys):
    shutil.copytree(swept / "results", tmp_path / "results")  # a new machine: the committed results, no checkpoints
    recorded = read(tmp_path, "default")["cells"]
    args = sweep_args(folder, tmp_path, "--num_epochs=1")
    train_in_process(monkeypatch)  # the sweeps and their runs in this process, no interpreter each
    status, out, _ = run_main("sweep.py", *args, capsys=capsys)
    assert status == 0 and out.count("skipped") == 2
    assert read(tmp_path, "default")["cells"] == recorded
    assert run_main("sweep.py", *args, "--seed=1", "--sweep_batch_sizes=[16]", capsys=capsys)[0] == 0
    (rerun,) = [c for c in read(tmp_path, "default")["cells"] if c["hyperparams"]["SEED"] == 1]
    assert rerun["status"] == "finished" and rerun["batch_size"] == 16, "different settings: the cell runs again"


def test_accuracy_figures_mark_every_epoch_and_keep_the_legend_off_the_curves():
    from figures import _accuracy_panels

    history = [{"epoch": 1, "test_acc": 40.0, "train_loss": 1.5, "time": 1.0}]
    cells = [{"batch_size": b, "with_lars": lars, "history": history} for b in (16, 32) for lars in (False, True)]
    fig = _accuracy_panels({"preset": "p", "cells": cells},
                           lambda with_lars: [c for c in cells if c["with_lars"] is with_lars], "")
    lines = [line for ax in fig.axes for line in ax.lines]
    assert lines and all(line.get_marker() not in ("None", "", None) for line in lines), "one-epoch runs are visible"
    (legend,) = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    fig.canvas.draw()
    legend_box = legend.get_window_extent()
    assert all(legend_box.x0 >= ax.get_window_extent().x1 for ax in fig.axes), "beside the panels, not on them"


def test_accuracy_figures_give_each_legend_label_one_colour_across_panels():
    from figures import _accuracy_panels

    history = [{"epoch": 1, "test_acc": 40.0, "train_loss": 1.5, "time": 1.0}]
    # Like study200: SGD's 8192 cell has another recipe than LARS's, batch 128 shares one.
    cells = [{"batch_size": 128, "with_lars": False, "recipe": "a", "history": history},
             {"batch_size": 8192, "with_lars": False, "recipe": "b", "history": history},
             {"batch_size": 128, "with_lars": True, "recipe": "a", "history": history},
             {"batch_size": 8192, "with_lars": True, "recipe": "a", "history": history}]
    fig = _accuracy_panels({"preset": "p", "cells": cells},
                           lambda with_lars: [c for c in cells if c["with_lars"] is with_lars], "")
    colours = {}
    for line in (line for ax in fig.axes for line in ax.lines):
        colours.setdefault(line.get_label(), set()).add(line.get_color())
    assert len(colours) == 3 and all(len(c) == 1 for c in colours.values()), "one colour per label"
    assert len(set().union(*colours.values())) == 3, "different labels, different colours"

    many = [{"batch_size": 2 ** i, "with_lars": True, "recipe": "a", "history": history} for i in range(12)]
    fig = _accuracy_panels({"preset": "p", "cells": many}, lambda with_lars: many, "")
    assert len({line.get_color() for line in fig.axes[0].lines}) == 12, "more labels than tab10 has colours"


ORDER_PRESET = """
SWEEP_BATCH_SIZES = [32, 16]
SWEEP_PEAK_LRS = [0.2, 0.1, 0.4] if BATCH_SIZE == 32 else [0.1]
SWEEP_EXTRA_SEEDS = [1]
MODEL = "resnet20"
"""


@pytest.mark.parametrize("breadth_first", [False, True])
def test_breadth_first_runs_each_cells_first_lr_then_the_next_then_the_extra_seeds(
        tmp_path, monkeypatch, capsys, breadth_first):
    import sweep
    from tests.conftest import run_main

    preset = tmp_path / "order.py"
    preset.write_text(ORDER_PRESET)
    trained = []

    def summary(run, recorded):  # a run is done once "trained"; the middle LR of a grid is best
        done = tuple(run.args) in trained
        top1 = 50.0 if run.summary_fields["peak_lr"] in (0.2, 0.1) else 40.0
        return {**run.summary_fields, "status": "finished" if done else "not run",
                "final_top1": top1 if done else None, "final_val_top1": top1 if done else None}

    monkeypatch.setattr(sweep, "summarise", summary)
    monkeypatch.setattr(sweep, "run_cell", lambda args, status: trained.append(tuple(args)) or 0)
    monkeypatch.setattr(sweep, "write_results", lambda *args: None)
    status, _, stderr = run_main("sweep.py", str(preset), f"--sweep_breadth_first={breadth_first}",
                                 f"--results_dir={tmp_path}", capsys=capsys)
    assert status == 0, stderr

    def describe(args):  # (batch, LARS, the run's folder: lr<peak>[-seed<seed>])
        options = dict(a[2:].split("=", 1) for a in args if a.startswith("--"))
        return int(options["batch_size"]), options["with_lars"] == "True", os.path.basename(options["checkpoint_dir"])

    order = list(map(describe, trained))
    first, second, third = ([(32, lars, f"lr{lr}") for lars in (False, True)] for lr in (0.2, 0.1, 0.4))
    small = [(16, lars, "lr0.1") for lars in (False, True)]
    seeds = [(batch, lars, f"lr{lr}-seed1") for batch, lr in ((32, 0.2), (16, 0.1)) for lars in (False, True)]
    if breadth_first:  # round by round: every first LR, 32's second and third, then the seeds
        assert order == [*first, *small, *second, *third, *seeds]
    else:  # cell by cell: its grid, then its seed
        assert order == [first[0], second[0], third[0], seeds[0], first[1], second[1], third[1], seeds[1],
                         small[0], seeds[2], small[1], seeds[3]]


def test_a_recorded_run_the_plan_no_longer_asks_for_stays_in_results_json():
    import sweep
    record = {"hyperparams": {"SEED": 1, "LR": 0.1}, "status": "finished"}
    planned = [{"hyperparams": {"SEED": 0, "LR": 0.1}}, {"status": "not run"}]
    assert sweep.unplanned_records([record], planned) == [record]
    assert sweep.unplanned_records([record], [*planned, {"hyperparams": {"SEED": 1, "LR": 0.1}}]) == []
    # operational settings (paths, the sweep's lists) do not make it another run
    moved = {"hyperparams": {"SEED": 1, "LR": 0.1, "CHECKPOINT_DIR": "elsewhere"}}
    assert sweep.unplanned_records([record], [moved]) == []


def test_every_run_results_study200_records_is_planned_or_kept(monkeypatch):
    # the grown study200 plan holds back the extra seeds of grids not yet done; their recorded
    # runs must still be written to results.json with the rest
    import sweep
    monkeypatch.chdir(ROOT)
    args = ["configs/cpu_sweep.py", "configs/large_batch.py", "configs/recipe.py", "configs/study200.py"]
    recorded = sweep.recorded_runs("results/study200")
    cells = list(sweep.cells(args, load_config(args), "study200"))
    _, summaries = sweep.plan(cells, "study200", recorded)
    written = [c for c in summaries if c["status"] in ("finished", "diverged")] + sweep.unplanned_records(recorded, summaries)
    keys = set().union(*recorded)  # cells recorded before and after runs listed their machines differ in keys
    assert len(recorded) >= 14 and sorted(json.dumps(c, sort_keys=True) for c in recorded) == sorted(
        json.dumps({k: v for k, v in c.items() if k in keys}, sort_keys=True) for c in written)
