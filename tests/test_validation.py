"""The validation split (VALIDATION_SIZE) and what chooses on it: the best LR of a grid and the
recipe of a SWEEP_RECIPES sweep are picked on validation top-1, and reported on the test set."""

import json
import os

import pytest
import torch

from data import Batches, DataError, channel_stats, hold_out_validation, load_cifar10, subset, training_data
from choosing import best_grid_run, steps_at_best_lr
from results import markdown, steps_cell
from tests.conftest import make_image_folder, run_main, run_script, train_in_process
from checkpoints import load_checkpoint


def numbered_data(per_class=50, classes=10, seed=0):
    """Training images whose first pixel is their index (mod 256, with the second pixel the
    quotient), labels in a shuffled order, as a data dict."""
    n = per_class * classes
    labels = torch.arange(classes).repeat(per_class)[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    images = torch.zeros(n, 32, 32, 3, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) % 256
    images[:, 0, 0, 1] = torch.arange(n) // 256
    return {"train_images": images, "train_labels": labels, "classes": [str(c) for c in range(classes)],
            "test_images": images[:10], "test_labels": labels[:10]}


def index_of(images):
    return (images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()).tolist()


@pytest.mark.parametrize("size", [100, 37])
def test_the_hold_out_is_class_balanced_and_disjoint_from_the_training_images(size):
    data = numbered_data()
    split = hold_out_validation(data, size)
    held, kept = index_of(split["val_images"]), index_of(split["train_images"])
    assert len(held) == size and len(kept) == 500 - size
    assert not set(held) & set(kept) and sorted(held + kept) == list(range(500)), "every image once, in one split"
    assert torch.equal(split["val_labels"], data["train_labels"][held])
    assert torch.equal(split["train_labels"], data["train_labels"][kept])
    counts = torch.bincount(split["val_labels"], minlength=10).tolist()
    assert counts == [size // 10 + (c < size % 10) for c in range(10)], "n // C per class, one more for the first n % C"


def test_the_hold_out_depends_on_the_labels_alone_not_on_the_seed_or_the_random_state():
    data = numbered_data()
    torch.manual_seed(1)
    first = index_of(hold_out_validation(data, 100)["val_images"])
    torch.manual_seed(12345)
    torch.rand(1000)
    second = index_of(hold_out_validation(data, 100)["val_images"])
    assert first == second
    other_labels = index_of(hold_out_validation(numbered_data(seed=1), 100)["val_images"])
    assert other_labels != first, "it does draw: a different labelling holds out other images"


def test_a_hold_out_that_leaves_a_class_nothing_to_train_on_is_refused():
    with pytest.raises(DataError, match="VALIDATION_SIZE = 500 would hold out 50 of the 50"):
        hold_out_validation(numbered_data(), 500)


def test_without_a_split_the_data_is_what_runs_recorded_before_it_existed(tiny_folder):
    # What the runs recorded before VALIDATION_SIZE existed trained on, rebuilt from its definition
    # without data.py: every training image in folder order (classes sorted, files sorted), the
    # first TRAIN_SUBSET of torch.randperm seeded 0, normalised by the mean and std of all of them.
    import numpy as np
    from PIL import Image

    classes = sorted(os.listdir(os.path.join(tiny_folder, "train")))
    files = [(os.path.join(tiny_folder, "train", c, f), label) for label, c in enumerate(classes)
             for f in sorted(os.listdir(os.path.join(tiny_folder, "train", c)))]
    images = torch.from_numpy(np.stack([np.asarray(Image.open(path).convert("RGB")) for path, _ in files]))
    labels = torch.tensor([label for _, label in files])
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(0))[:7]
    pixels = images.reshape(-1, 3).double() / 255
    data = training_data(tiny_folder, 0, 0, 7)
    assert "val_images" not in data
    assert torch.equal(data["train_images"], images[order]) and torch.equal(data["train_labels"], labels[order])
    torch.testing.assert_close(data["mean"].double(), pixels.mean(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(data["std"].double(), pixels.std(0, correction=0), rtol=0, atol=1e-6)


def test_with_a_split_the_normalisation_and_the_subset_come_from_the_training_images_only(tiny_folder):
    whole = load_cifar10(tiny_folder, statistics=False)
    data = training_data(tiny_folder, 0, 6, 4)
    held_out = hold_out_validation(whole, 6)
    assert torch.equal(data["val_images"], held_out["val_images"]), "the subset does not shrink the hold-out"
    mean, std = channel_stats(held_out["train_images"])
    assert torch.equal(data["mean"], mean) and torch.equal(data["std"], std)
    assert len(data["train_labels"]) == 4
    kept = {bytes(image.flatten().tolist()) for image in held_out["train_images"]}
    assert all(bytes(image.flatten().tolist()) in kept for image in data["train_images"])
    batches = Batches(data, torch.device("cpu"))
    assert batches.num_train == 4 and len(batches.validation) == 6, "precise BN and training see the 4 only"


def fake_run(peak, final_val, final_test, role="grid", seed=0, recipe="", steps=(None, None, None)):
    history = [{"epoch": e, "test_acc": a, "val_acc": a} for e, a in enumerate(steps, 1) if a is not None]
    return {"batch_size": 16, "with_lars": False, "recipe": recipe, "role": role, "peak_lr": peak,
            "trust_coef": 0.02, "seed": seed, "status": "finished", "final_top1": final_test,
            "final_val_top1": final_val, "time_to_train": 1.0, "steps_per_epoch": 10, "history": history,
            "hyperparams": {"LR": peak / 10}}


def test_a_grid_picks_its_best_lr_on_validation_when_the_test_set_disagrees():
    on_test = fake_run(0.1, final_val=60.0, final_test=80.0)
    on_validation = fake_run(0.2, final_val=70.0, final_test=75.0)
    assert best_grid_run([on_test, on_validation]) is on_validation
    seed = fake_run(0.2, final_val=90.0, final_test=73.0, role="seed", seed=1)
    results = {"preset": "p", "command": "c", "grid": True, "reference": None,
               "cells": [on_test, on_validation, seed]}
    text = markdown(results)
    assert "chosen on the validation split" in text
    best_row = next(line for line in text.splitlines() if line.startswith("| 16 |"))
    assert "| 0.2 | 80.00 ± 14.14 (n=2) | 74.00 ± 1.41 (n=2) |" in best_row, "val and test over both seeds"
    without_split = [{**c, "final_val_top1": None} for c in (on_test, on_validation)]
    assert best_grid_run(without_split)["peak_lr"] == 0.1, "records without a split choose on test"


def test_steps_to_target_average_every_seed_of_the_best_lr_and_count_those_that_reached_it():
    best = fake_run(0.2, 70.0, 70.0, steps=(55.0, 72.0, 81.0))
    seed = fake_run(0.2, 69.0, 69.0, role="seed", seed=1, steps=(45.0, 71.0, 75.0))
    worse = fake_run(0.1, 60.0, 90.0, steps=(90.0, 90.0, 90.0))  # fastest, but not the chosen LR
    steps = steps_at_best_lr([best, seed, worse])
    assert steps == {50: [10, 20], 70: [20, 20], 80: [30], "runs": 2}
    assert [steps_cell(steps, t) for t in (50, 70, 80)] == ["15", "20", "30 (1 of 2)"]
    assert steps_cell(steps_at_best_lr([fake_run(0.2, 1.0, 1.0, steps=(10.0,))]), 50) == "-"
    assert steps_at_best_lr([{**best, "status": "not run"}]) == {}


RECIPE_PRESET = """
SWEEP_BATCH_SIZES = [16]
SWEEP_WITH_LARS = [False, True]
SWEEP_RECIPES = ["plain", "smoothed"]
if RECIPE == "smoothed":
    LABEL_SMOOTHING = 0.2
SWEEP_PEAK_LRS = [0.05] if RECIPE == "plain" else [0.05, 0.1]
MODEL = "resnet20"
NUM_EPOCHS = 2
WARMUP_EPOCHS = 0
VALIDATION_SIZE = 12
NUM_THREADS = 1
"""


@pytest.mark.slow
def test_a_recipe_sweep_runs_every_recipe_and_chooses_on_validation(tmp_path, monkeypatch, capsys):
    folder = make_image_folder(tmp_path / "data", per_class_train=24, per_class_test=6)
    preset = tmp_path / "recipes.py"
    preset.write_text(RECIPE_PRESET)
    args = [str(preset), f"--data_dir={folder}", f"--checkpoint_dir={tmp_path / 'ck'}",
            f"--results_dir={tmp_path / 'results'}"]
    train_in_process(monkeypatch)  # the sweep and its runs in this process: the same results, no interpreter each
    status, _, stderr = run_main("sweep.py", *args, capsys=capsys)
    assert status == 0, stderr[-3000:]
    results = json.loads((tmp_path / "results" / "recipes" / "results.json").read_text())
    runs = [(c["with_lars"], c["recipe"], c["peak_lr"]) for c in results["cells"]]
    assert sorted(runs) == sorted((lars, r, p) for lars in (False, True)
                                  for r, peaks in (("plain", [0.05]), ("smoothed", [0.05, 0.1])) for p in peaks)
    for cell in results["cells"]:
        assert cell["hyperparams"]["RECIPE"] == cell["recipe"]
        assert cell["hyperparams"]["LABEL_SMOOTHING"] == (0.2 if cell["recipe"] == "smoothed" else 0.0)
        assert cell["final_val_top1"] == cell["history"][-1]["val_acc"] and cell["steps_per_epoch"] == 60 // 16
    text = (tmp_path / "results" / "recipes" / "results.md").read_text()
    assert text == markdown(results) and "## Recipe choice" in text
    choice = [line.split("|")[1:-1] for line in text.split("## Recipe choice")[1].split("## Whole grid")[0].splitlines()
              if line.startswith("| 16 |")]
    for optimizer in ("SGD", "LARS"):
        rows = [[c.strip() for c in row] for row in choice if row[1].strip() == optimizer]
        assert len(rows) == 2 and rows[0][-1] == "yes" and rows[1][-1] == ""
        assert float(rows[0][4]) >= float(rows[1][4]), "ranked by validation top-1"

    path = tmp_path / "ck" / "recipes" / "smoothed" / "lr0.1" / "withLars-16.pth"
    checkpoint = load_checkpoint(str(path))
    status, shown, stderr = run_main("val.py", f"--checkpoint={path}", f"--data_dir={folder}", capsys=capsys)
    assert status == 0, stderr
    lines = shown.strip().splitlines()
    last = checkpoint["history"][-1]
    assert lines[-2].startswith(f"validation top-1 accuracy: {last['val_acc']:.2f}% (12 training images held out)")
    assert lines[-1] == f"top-1 accuracy: {last['test_acc']:.2f}%"
    assert "val top-1 %" in shown


def table_shapes(text):
    """[(header cells, [cells of each row])] of every markdown table in ``text``."""
    tables, current = [], None
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = line.count("|") - 1
            if current is None:
                current = (cells, [])
            elif not line.startswith("|---"):
                current[1].append(cells)
        elif current is not None:
            tables.append(current)
            current = None
    return tables


@pytest.mark.parametrize("folder", ["results/study", "results/cpu_sweep", "results/recipe", "results/study200"])
def test_every_table_row_has_its_headers_cells_also_for_runs_not_yet_done(folder):
    from tests.conftest import ROOT

    results = json.loads(open(f"{ROOT}/{folder}/results.json").read())
    partial = {**results, "cells": [{**c, "status": "not run", "history": []} if i % 2 else c
                                    for i, c in enumerate(results["cells"])]}
    for text in (markdown(results), markdown(partial)):
        tables = table_shapes(text)
        assert tables
        for header, rows in tables:
            assert all(cells == header for cells in rows), (folder, header, rows)


def test_a_cell_not_yet_run_shows_a_dash_in_every_accuracy_column():
    run = fake_run(0.2, 70.0, 75.0)
    results = {"preset": "p", "command": "c", "grid": True, "reference": None,
               "cells": [run, {**run, "with_lars": True, "status": "not run", "history": []}]}
    lines = markdown(results).splitlines()
    header = next(line for line in lines if line.startswith("| Batch | SGD: peak LR"))
    row = next(line for line in lines if line.startswith("| 16 |"))
    cells = dict(zip([n.strip() for n in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))
    lars_accuracies = [name for name in cells if name.startswith("LARS") and "%" in name]
    assert lars_accuracies == ["LARS: val %", "LARS: top-1 %"], "the columns this test is about"
    assert all(cells[name] == "-" for name in lars_accuracies), cells


def test_a_grid_reference_shows_its_best_of_grid_mean_not_one_of_its_runs(monkeypatch):
    from tests.conftest import ROOT

    monkeypatch.chdir(ROOT)
    study = json.loads(open("results/study/results.json").read())
    lars_8192 = [c for c in study["cells"] if (c["batch_size"], c["with_lars"], c["peak_lr"]) == (8192, True, 1.0)]
    assert len(lars_8192) == 3
    results = {"preset": "p", "command": "c", "grid": True, "reference": "results/study",
               "cells": [{**fake_run(0.2, 70.0, 75.0), "batch_size": 8192, "with_lars": True}]}
    row = next(line for line in markdown(results).splitlines() if line.startswith("| 8192 |"))
    mean = sum(c["final_top1"] for c in lars_8192) / 3
    assert row.rstrip().endswith(f"| 48.97 | {mean:.2f} |"), row


def test_a_reference_gets_a_steps_row_from_every_seed_of_the_runs_its_tables_report(monkeypatch):
    from tests.conftest import ROOT

    monkeypatch.chdir(ROOT)
    study = json.loads(open("results/study/results.json").read())
    lars_8192 = [c for c in study["cells"] if (c["batch_size"], c["with_lars"], c["peak_lr"]) == (8192, True, 1.0)]
    first_epochs = [next(row["epoch"] for row in c["history"] if row["test_acc"] >= 50) for c in lars_8192]
    results = {"preset": "p", "command": "c", "grid": True, "reference": "results/study", "targets": [50, 99],
               "cells": [{**fake_run(0.2, 70.0, 75.0), "batch_size": 8192, "with_lars": True}]}
    text = markdown(results)
    row = next(line for line in text.splitlines() if line.startswith("| 8192 (study) |"))
    steps = sum(first_epochs) / 3 * lars_8192[0]["steps_per_epoch"]
    assert row.endswith(f"| {steps:.0f} | - |"), row
    assert "Rows marked (study): the same targets in the runs of results/study" in text
    older = markdown({**results, "reference": "results/cpu_sweep"})  # recorded no steps per epoch
    assert "(cpu_sweep)" not in older and "Rows marked" not in older


def test_the_original_readmes_form_shows_each_batchs_chosen_lr_over_its_seeds():
    grid = [fake_run(0.1, 60.0, 80.0), fake_run(0.2, 70.0, 75.0), fake_run(0.2, 72.0, 71.0, role="seed", seed=1)]
    other_batch = {**fake_run(0.4, 50.0, 55.0), "batch_size": 128}
    text = markdown({"preset": "p", "command": "c", "grid": True, "reference": None,
                     "cells": [*grid, other_batch]})
    form = text.split("## In the original README's form")[1].split("## Whole grid")[0]
    assert "### Without LARS" in form and "### With LARS" not in form
    rows = [line for line in form.splitlines() if line.startswith("| 1")]
    assert rows[0].startswith("| 16 | 0.02 | 73.00 ± 2.83 (n=2) |") and rows[0].endswith("| 71.00 ± 1.41 (n=2) |")
    assert rows[1].startswith("| 128 (base line) | 0.04 | 55.00 (n=1) |")


def test_the_steps_table_follows_sweep_targets(capsys):
    from tests.conftest import run_main

    run = fake_run(0.2, 90.0, 90.0, steps=(75.0, 91.0))
    text = markdown({"preset": "p", "command": "c", "grid": True, "reference": None, "targets": [70, 90],
                     "cells": [run]})
    assert "| Batch | Steps/epoch | SGD: 70 % | 90 % | LARS: 70 % | 90 % |" in text
    assert "| 16 | 10 | 10 | 20 |  |  |" in text
    status, _, stderr = run_main("sweep.py", "--sweep_targets=[0, 90]", capsys=capsys)
    assert status == 2 and "SWEEP_TARGETS = [0, 90] is not allowed" in stderr


def test_the_answer_table_gives_each_optimizers_loss_with_welchs_interval_and_the_lead_at_the_largest_batch():
    from significance import welch_interval

    def run(batch, lars, recipe, peak, val, test, seed=0):
        return {**fake_run(peak, val, test, role="seed" if seed else "grid", seed=seed, recipe=recipe),
                "batch_size": batch, "with_lars": lars}

    cells = [run(16, False, "one", 0.1, 80.0, 79.0), run(16, False, "one", 0.1, 81.0, 80.0, seed=1),
             run(16, False, "one", 0.2, 70.0, 90.0),  # better on test, worse on validation: not chosen
             run(64, False, "one", 0.1, 60.0, 61.0), run(64, False, "one", 0.1, 62.0, 63.0, seed=1),
             run(64, False, "other", 0.4, 65.0, 64.0),  # only at the largest batch: compared with "one" at 16
             run(16, True, "one", 0.5, 79.0, 78.5), run(16, True, "one", 0.5, 79.5, 78.0, seed=1),
             run(64, True, "one", 1.0, 75.0, 74.0), run(64, True, "one", 1.0, 77.0, 75.0, seed=1)]
    text = markdown({"preset": "p", "command": "c", "grid": True, "reference": None, "cells": cells})
    section = text.split("## From the smallest batch to the largest")[1].split("## Recipe choice")[0]
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line.strip("|").split("|")[-1].strip()
            for line in section.splitlines() if line.startswith("| SGD") or line.startswith("| LARS")}
    sgd = welch_interval([79.0, 80.0], [61.0, 63.0])
    assert rows["SGD", "one"] == f"{sgd['difference']:.2f} ({sgd['low']:.2f} to {sgd['high']:.2f})"
    assert rows["SGD", "other (16: one)"] == f"{79.5 - 64.0:.2f} (-)", "one seed at 64: no interval"
    lars = welch_interval([78.5, 78.0], [74.0, 75.0])
    assert rows["LARS", "one"] == f"{lars['difference']:.2f} ({lars['low']:.2f} to {lars['high']:.2f})"
    lead = welch_interval([74.0, 75.0], [61.0, 63.0])
    assert (f"At batch 64, recipe one: LARS leads SGD by {lead['difference']:.2f} ({lead['low']:.2f} to "
            f"{lead['high']:.2f}) top-1 points.") in section
    assert "recipe other: LARS leads" not in section, "no LARS cell of that recipe"
