"""Every preset runs as its header comment says, and the study's grid is the one it promises."""

import glob
import os
import re

import pytest

import sweep
from results import DONE, at_grid_edge, best_grid_run, read_results, recipe_ranking
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


def test_the_200_epoch_study_is_its_recipes_runs_at_200_epochs_on_the_issues_grid(monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(STUDY200)
    assert cfg.SWEEP_BATCH_SIZES == [8192, 128] and cfg.SWEEP_BREADTH_FIRST and cfg.SWEEP_TARGETS == [70, 80, 90]
    runs = {}
    for (batch_size, with_lars, _, cell_cfg), grid, seeds in sweep_runs(STUDY200):
        assert cell_cfg.RECIPE in RECIPE_CHANGES or cell_cfg.RECIPE == "original"
        runs[batch_size, with_lars] = grid, seeds
        for run in grid + seeds:
            assert (run.cfg.NUM_EPOCHS, run.cfg.VALIDATION_SIZE, run.cfg.EVAL_EVERY) == (200, 5000, 2)
            # the recipe run at the same LR and seed: the same settings but the budget
            same = load_config([a for a in run.args if a != "configs/study200.py"])
            differs = {k for k, v in vars(run.cfg).items() if v != getattr(same, k)}
            assert differs <= {"NUM_EPOCHS", "EVAL_EVERY"} | {k for k in differs if k.startswith("SWEEP_")}, differs
        peaks = [peak_lr(run.cfg) for run in grid]
        centre = peaks[0]
        assert peaks[:3] == pytest.approx([centre, centre / 2, centre * 2] if batch_size == 8192 else [centre])
        for i, peak in enumerate(peaks[3:], 3):  # an extension goes on doubling, or halving, past an edge
            assert peak in (pytest.approx(max(peaks[:i]) * 2), pytest.approx(min(peaks[:i]) / 2)), peaks
        assert len(seeds) == 1
    assert sorted(runs) == [(128, False), (128, True), (8192, False), (8192, True)]


def test_the_200_epoch_study_extends_a_grid_exactly_where_its_best_is_at_an_edge(monkeypatch):
    # The issue's rule, checked against the runs results/study200 records: each extension LR
    # follows a grid whose best (on validation) was the edge it extends, and a finished grid
    # whose best is at an edge has its extension (else the sweep holds back that cell's seeds).
    monkeypatch.chdir(ROOT)
    recorded = read_results("results/study200")["cells"]
    for (batch_size, with_lars, _, cell_cfg), grid, _ in sweep_runs(STUDY200):
        peaks = [peak_lr(run.cfg) for run in grid]
        cell_runs = [c for c in recorded if c["role"] == "grid" and (c["batch_size"], c["with_lars"], c["recipe"])
                     == (batch_size, with_lars, cell_cfg.RECIPE)]

        def finished_best(grid_peaks):
            runs = [c for c in cell_runs if any(c["peak_lr"] == pytest.approx(p) for p in grid_peaks)]
            done = len(runs) == len(grid_peaks) and all(c["status"] in DONE for c in runs)
            return best_grid_run(runs) if done else None

        for i in range(3, len(peaks)):
            best = finished_best(peaks[:i])
            edge = max(peaks[:i]) if peaks[i] > max(peaks[:i]) else min(peaks[:i])
            assert best is not None and best["peak_lr"] == pytest.approx(edge), (batch_size, with_lars, peaks[i])
        best = finished_best(peaks)
        assert best is None or not at_grid_edge(best, [{"peak_lr": p} for p in peaks]), \
            f"batch {batch_size}, LARS {with_lars}: best at the edge {best['peak_lr']:g}; extend the grid"


def test_the_200_epoch_study_centres_on_the_recipe_runs_choice_on_validation(monkeypatch):
    # results/recipe's ranking (validation top-1, mean over seeds) picks each cell's recipe; the
    # centre is that recipe's best peak LR there (for "original", its grid's best)
    monkeypatch.chdir(ROOT)
    ranking = recipe_ranking(read_results("results/recipe"))
    for (batch_size, with_lars, _, cell_cfg), grid, _ in sweep_runs(STUDY200):
        _, recipe, best, _ = ranking[batch_size, with_lars][0]
        assert (cell_cfg.RECIPE, peak_lr(grid[0].cfg)) == (recipe, pytest.approx(best["peak_lr"])), (batch_size, with_lars)
