"""Every preset runs as its header comment says, and the study's grid is the one it promises."""

import glob
import os
import re

import pytest

import sweep
from choosing import DONE, at_grid_edge, best_grid_run, read_results, recipe_ranking
from config import load_config, peak_lr, run_differences, validate
from models import MODELS
from tests.conftest import ROOT

PRESETS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True))
STUDY = ["configs/cpu_sweep.py", "configs/large_batch.py", "configs/study.py"]


def usage(preset):
    """The script and arguments of the command in the preset's header, without placeholders."""
    with open(os.path.join(ROOT, preset)) as f:
        match = next(m for m in map(re.compile(r"#.*python (train|sweep)\.py (.*)").match, f) if m)
    args = [a for a in match.group(2).split() if "PATH_TO" not in a and "[" not in a and not a.endswith("=B")]
    return match.group(1), args


def sweep_runs(args):
    """Every run of a sweep: each cell's grid, and the extra seeds of its first peak LR."""
    cfg = load_config(args)
    sweep.validate_sweep(cfg)
    preset = sweep.preset_name(args)
    for cell in sweep.cells(args, cfg, preset):
        grid = sweep.grid_runs(cell, preset)
        yield cell, grid, sweep.seed_runs(cell, preset, {"peak_lr": grid[0].cfg.LR * grid[0].cfg.WARMUP_MULTIPLIER})


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_resolves_as_its_header_says(preset, monkeypatch):
    monkeypatch.chdir(ROOT)  # the headers name files relative to the checkout
    script, args = usage(preset)
    assert preset in args, f"{preset}'s header does not use it"
    if script == "train":
        validate(load_config(args), 1, tuple(MODELS))
        return
    runs = [run for _, grid, seeds in sweep_runs(args) for run in grid + seeds]
    assert runs and all(run.cfg.NUM_EPOCHS > 0 for run in runs)


def test_the_study_gives_both_optimizers_the_same_grid_of_lrs_spaced_2x(monkeypatch):
    monkeypatch.chdir(ROOT)
    grids = {}
    for (batch_size, with_lars, _, cfg), grid, seeds in sweep_runs(STUDY):
        peaks = sorted(peak_lr(run.cfg) * (run.cfg.TRUST_COEF if with_lars else 1) for run in grid)
        grids[batch_size, with_lars] = peaks
        if cfg.SWEEP_PEAK_LRS is None:  # a batch size of the rule: one run at large_batch.py's LR
            rule = load_config(["configs/cpu_sweep.py", "configs/large_batch.py", f"--batch_size={batch_size}",
                                f"--with_lars={with_lars}"])
            assert len(grid) == 1 and peak_lr(grid[0].cfg) == peak_lr(rule) and not seeds
        else:
            assert len(peaks) >= 4 and len(seeds) == 2, (batch_size, with_lars)
            assert all(b / a == pytest.approx(2.0) for a, b in zip(peaks, peaks[1:])), (batch_size, with_lars)
    assert sorted({b for b, _ in grids}) == [128, 256, 512, 1024, 2048, 4096, 8192]
    for batch_size in (128, 512, 2048, 8192):
        assert len(grids[batch_size, True]) == len(grids[batch_size, False]) >= 4


RECIPE = ["configs/cpu_sweep.py", "configs/large_batch.py", "configs/recipe.py"]
# What each variant of configs/recipe.py changes against the shared recipe (the LR aside).
RECIPE_CHANGES = {"shared": set(), "no_label_smoothing": {"LABEL_SMOOTHING"}, "no_zero_init": {"ZERO_INIT_RESIDUAL"},
                  "no_exclusion": {"EXCLUDE_BN_BIAS"}, "original_warmup": {"WARMUP_EPOCHS", "WARMUP_MULTIPLIER"}}


def test_the_recipe_runs_give_both_optimizers_the_same_recipes_and_runs_chosen_on_validation(monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = {}
    for (batch_size, with_lars, _, cfg), grid, _ in sweep_runs(RECIPE):
        runs.setdefault((batch_size, with_lars), {})[cfg.RECIPE] = grid
        assert all(run.cfg.VALIDATION_SIZE == 5000 for run in grid)
    for batch_size in (128, 2048, 8192):
        sgd, lars = runs[batch_size, False], runs[batch_size, True]
        assert {r: len(g) for r, g in sgd.items()} == {r: len(g) for r, g in lars.items()}, batch_size
    for batch_size in (128, 8192):
        assert set(runs[batch_size, False]) >= set(RECIPE_CHANGES)
        for with_lars in (False, True):
            shared = vars(runs[batch_size, with_lars]["shared"][0].cfg)
            for recipe, changed in RECIPE_CHANGES.items():
                (run,) = runs[batch_size, with_lars][recipe]
                assert peak_lr(run.cfg) == pytest.approx(peak_lr(runs[batch_size, with_lars]["shared"][0].cfg))
                differs = set(run_differences(shared, vars(run.cfg))) - {"RECIPE", "LR"}
                assert differs == changed, (batch_size, with_lars, recipe)


@pytest.mark.parametrize("with_lars", [False, True])
@pytest.mark.parametrize("batch_size", [2048, 8192])
def test_the_original_recipe_is_cpu_sweep_alone_with_a_grid_of_lrs_spaced_2x(monkeypatch, batch_size, with_lars):
    monkeypatch.chdir(ROOT)
    (grid,) = [g for (b, lars, _, cfg), g, _ in sweep_runs(RECIPE)
               if (b, lars, cfg.RECIPE) == (batch_size, with_lars, "original")]
    alone = vars(load_config(["configs/cpu_sweep.py", f"--batch_size={batch_size}", f"--with_lars={with_lars}"]))
    for run in grid:
        differs = set(run_differences(alone, vars(run.cfg)))  # operational settings (sweep's, paths) aside
        assert differs <= {"LR", "VALIDATION_SIZE", "RECIPE"}, differs
    peaks = sorted(peak_lr(run.cfg) for run in grid)
    assert len(peaks) >= 3 and all(b / a == pytest.approx(2.0) for a, b in zip(peaks, peaks[1:]))


STUDY200 = [*RECIPE, "configs/study200.py"]


def study200_cells(monkeypatch):
    """{(batch, with LARS, recipe): (grid runs, extra-seed runs)} of configs/study200.py."""
    monkeypatch.chdir(ROOT)
    return {(b, lars, cfg.RECIPE): (grid, seeds) for (b, lars, _, cfg), grid, seeds in sweep_runs(STUDY200)}


def test_the_200_epoch_study_gives_both_optimizers_one_recipe_and_grids_of_four_lrs_spaced_2x(monkeypatch):
    cells = study200_cells(monkeypatch)
    assert sorted(cells) == [(128, False, "calibration"), (128, False, "no_zero_init"), (128, True, "no_zero_init"),
                             (8192, False, "no_zero_init"), (8192, False, "original"), (8192, True, "no_zero_init")]
    cfg = load_config(STUDY200)
    assert cfg.SWEEP_BATCH_SIZES == [128, 8192] and cfg.SWEEP_BREADTH_FIRST and cfg.SWEEP_TARGETS == [70, 80, 90]
    for (batch_size, with_lars, recipe), (grid, seeds) in cells.items():
        if recipe == "calibration":
            continue
        for run in grid + seeds:
            assert (run.cfg.NUM_EPOCHS, run.cfg.VALIDATION_SIZE, run.cfg.EVAL_EVERY) == (200, 5000, 2)
            # the recipe run at the same LR and seed: the same settings but the budget
            same = load_config([a for a in run.args if a != "configs/study200.py"])
            differs = {k for k, v in vars(run.cfg).items() if v != getattr(same, k)}
            assert differs <= {"NUM_EPOCHS", "EVAL_EVERY"} | {k for k in differs if k.startswith("SWEEP_")}, differs
        peaks = sorted(peak_lr(run.cfg) * (run.cfg.TRUST_COEF if with_lars else 1) for run in grid)
        assert len(peaks) >= 4 and all(b / a == pytest.approx(2.0) for a, b in zip(peaks, peaks[1:])), peaks
        assert [run.cfg.SEED for run in seeds] == ([1, 2] if recipe == "no_zero_init" else [1])
    # the grids at batch 128 reach down to the common ResNet-20 recipe's LR
    assert min(peak_lr(r.cfg) for r in cells[128, False, "no_zero_init"][0]) == pytest.approx(0.05)
    assert min(peak_lr(r.cfg) * r.cfg.TRUST_COEF for r in cells[128, True, "no_zero_init"][0]) == pytest.approx(0.0025)
    assert max(peak_lr(r.cfg) * r.cfg.TRUST_COEF for r in cells[8192, True, "no_zero_init"][0]) == pytest.approx(0.16)


def test_the_calibration_run_is_he_et_al_s_resnet20_recipe(monkeypatch):
    (run,), seeds = study200_cells(monkeypatch)[128, False, "calibration"]
    cfg = run.cfg
    assert not seeds and (cfg.MODEL, cfg.BATCH_SIZE, cfg.WITH_LARS, cfg.VALIDATION_SIZE) == ("resnet20", 128, False, 5000)
    assert (cfg.LR, cfg.WARMUP_EPOCHS, cfg.MOMENTUM, cfg.WEIGHT_DECAY) == (0.1, 0, 0.9, 1e-4)
    assert (cfg.LR_SCHEDULE, cfg.STEP_MILESTONES, cfg.STEP_GAMMA, cfg.NUM_EPOCHS) == ("step", [91, 137], 0.1, 182)
    assert (cfg.LABEL_SMOOTHING, cfg.ZERO_INIT_RESIDUAL, cfg.EXCLUDE_BN_BIAS) == (0.0, False, False)
    # 32k, 48k and 64k iterations of He et al. on 45,000 training images, 351 steps per epoch
    assert [round(k / 351) for k in (32_000, 48_000, 64_000)] == [*cfg.STEP_MILESTONES, cfg.NUM_EPOCHS]


def test_the_200_epoch_study_brackets_every_finished_grid_s_best_on_validation(monkeypatch):
    # a finished grid whose best (on validation) is its smallest or largest LR must be extended
    # (the sweep holds back that cell's seeds until it is)
    recorded = read_results(os.path.join(ROOT, "results/study200"))["cells"]
    for (batch_size, with_lars, recipe), (grid, _) in study200_cells(monkeypatch).items():
        peaks = [peak_lr(run.cfg) for run in grid]
        runs = [c for c in recorded if c["role"] == "grid" and c["seed"] == 0 and
                (c["batch_size"], c["with_lars"], c["recipe"]) == (batch_size, with_lars, recipe)
                and any(c["peak_lr"] == pytest.approx(p) for p in peaks)]
        if len(runs) < len(peaks) or not all(c["status"] in DONE for c in runs):
            continue
        best = best_grid_run(runs)
        assert best is None or not at_grid_edge(best, [{"peak_lr": p} for p in peaks]), \
            f"batch {batch_size}, LARS {with_lars}, {recipe}: best at the edge {best['peak_lr']:g}; extend the grid"


def test_the_200_epoch_study_starts_each_grid_at_the_recipe_runs_choice_on_validation(monkeypatch):
    # results/recipe's ranking (validation top-1, mean over seeds) chose no_zero_init for three
    # cells and "original" for SGD at 8192; no_zero_init, the one recipe of the answer, also runs
    # there. Each recipe's grid starts at its best peak LR of the 20-epoch runs (for "original" at
    # 8192, its grid's best).
    ranking = recipe_ranking(read_results(os.path.join(ROOT, "results/recipe")))
    cells = study200_cells(monkeypatch)
    for (batch_size, with_lars), ranked in ranking.items():
        if batch_size not in (128, 8192):
            continue
        _, chosen, best, _ = ranked[0]
        grid, _ = cells[batch_size, with_lars, chosen]
        assert peak_lr(grid[0].cfg) == pytest.approx(best["peak_lr"]), (batch_size, with_lars)
        assert (batch_size, with_lars, "no_zero_init") in cells
