"""EVAL_EVERY: evaluation after every N-th epoch, the last and a diverged one; the training is
the same as when every epoch is evaluated, and every reader of the history copes with the gaps."""

import pytest
import torch

from choosing import cell_summary, steps_to_target
from results import _evaluations, ordinal
from tests.conftest import run_script
from checkpoints import load_checkpoint
from utils import EXIT_DIVERGED, evaluated, format_history

TINY_RUN = ["--model=resnet20", "--batch_size=4", "--num_epochs=4", "--warmup_epochs=0", "--precise_bn=1",
            "--validation_size=3", "--num_threads=1"]


def train(folder, checkpoints, *extra):
    result = run_script("train.py", *TINY_RUN, f"--data_dir={folder}", f"--checkpoint_dir={checkpoints}", *extra)
    return result, checkpoints / "noLars-4.pth"


@pytest.mark.slow
def test_evaluating_every_third_epoch_trains_the_same_weights_and_records_only_those_epochs(tiny_folder, tmp_path):
    every, every_path = train(tiny_folder, tmp_path / "every")
    sparse, sparse_path = train(tiny_folder, tmp_path / "sparse", "--eval_every=3")
    assert every.returncode == 0 and sparse.returncode == 0, sparse.stderr[-3000:]
    full, gaps = load_checkpoint(str(every_path)), load_checkpoint(str(sparse_path))
    for name, tensor in full["model"].items():  # BN statistics too: the last epoch recomputes them in both
        assert torch.equal(tensor, gaps["model"][name]), name
    assert [row["train_loss"] for row in gaps["history"]] == [row["train_loss"] for row in full["history"]]
    assert [row["epoch"] for row in evaluated(gaps["history"])] == [3, 4], "every 3rd epoch and the last"
    assert not {"test_acc", "val_acc"} & (set(gaps["history"][0]) | set(gaps["history"][1]))
    for row in evaluated(gaps["history"]):
        same = full["history"][row["epoch"] - 1]
        assert (row["test_acc"], row["val_acc"]) == (same["test_acc"], same["val_acc"])

    log = sparse.stdout.splitlines()
    assert [line for line in log if line.startswith("epoch   1/4")][0].startswith("epoch   1/4 | loss ")
    assert not any("top-1" in line for line in log if line.startswith(("epoch   1/4", "epoch   2/4")))
    assert any("top-1" in line for line in log if line.startswith("epoch   3/4"))
    assert f"top-1 {gaps['history'][-1]['test_acc']:.2f}% after 4 epochs" in sparse.stdout

    summary = cell_summary(str(sparse_path), 4)
    assert summary["final_top1"] == gaps["history"][-1]["test_acc"]
    assert summary["final_val_top1"] == gaps["history"][-1]["val_acc"]
    shown = run_script("val.py", f"--checkpoint={sparse_path}", f"--data_dir={tiny_folder}")
    assert shown.returncode == 0, shown.stderr
    table = format_history(gaps["history"])
    assert table in shown.stdout and table.splitlines()[2].split("|")[1:3] == ["           - ", "            - "]


@pytest.mark.slow
def test_a_diverged_epoch_is_evaluated_whatever_the_interval(tiny_folder, tmp_path):
    result, path = train(tiny_folder, tmp_path / "diverged", "--eval_every=10", "--divergence_loss=0.01")
    assert result.returncode == EXIT_DIVERGED, result.stderr[-3000:]
    history = load_checkpoint(str(path))["history"]
    assert len(history) == 1 and "test_acc" in history[0] and "val_acc" in history[0]


def test_steps_to_target_read_only_evaluated_epochs():
    history = [{"epoch": 1, "train_loss": 2.0, "time": 1.0},
               {"epoch": 2, "test_acc": 40.0, "train_loss": 1.5, "time": 2.0},
               {"epoch": 3, "train_loss": 1.2, "time": 3.0},
               {"epoch": 4, "test_acc": 75.0, "train_loss": 1.0, "time": 4.0}]
    cell = {"steps_per_epoch": 10, "history": history}
    assert [steps_to_target(cell, t) for t in (30, 50, 80)] == [20, 40, None]


def test_results_say_when_accuracy_was_read_in_english_ordinals():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 102, 111)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "102nd", "111th"]
    cells = [{"hyperparams": {"EVAL_EVERY": 2}}, {"hyperparams": {"EVAL_EVERY": 3}}, {"status": "not run"}]
    assert _evaluations({"cells": cells}) == "the end of every 2nd or 3rd epoch and of the last"
    assert _evaluations({"cells": [{"hyperparams": {"EVAL_EVERY": 1}}]}) == "the end of each epoch"


def test_an_interval_below_one_is_refused(capsys):
    from tests.conftest import run_main

    status, _, stderr = run_main("train.py", "--eval_every=0", capsys=capsys)
    assert status == 2 and "EVAL_EVERY = 0 is not allowed: must be a positive integer" in stderr
