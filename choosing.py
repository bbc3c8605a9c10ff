"""Which runs a sweep's results stand on: each run's summary from its checkpoint, results.json
read back, the best peak LR of each grid (on the validation split where there is one), whether a
grid must be extended, the recipe each batch size and optimizer chooses, the cells of the answer
and the steps to target accuracies. No figures, no matplotlib: sweep.py plans with it."""

import json
import math
import os
import statistics

from checkpoints import CheckpointError, load_checkpoint
from diagnostics import thinned
from utils import evaluated, machines_so_far


class ResultsError(RuntimeError):
    """A results folder without a readable results.json."""


DONE = ("finished", "diverged")

TARGETS = (50, 70, 80)  # test top-1 %, for the steps-to-target table of a sweep that names none


def cell_summary(path, num_epochs):
    """One run as plain values; ``status`` is "finished", "diverged", "partial" or "not run"."""
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError:
        return {"status": "not run", "history": []}
    history = checkpoint["history"]
    finite = [row["test_acc"] for row in evaluated(history) if not math.isnan(row["test_acc"])]
    finite_val = [row["val_acc"] for row in evaluated(history) if not math.isnan(row.get("val_acc", math.nan))]
    if checkpoint["diverged"]:
        status = "diverged"
    else:
        status = "finished" if checkpoint["epoch"] >= num_epochs else "partial"
    return {
        "status": status, "epochs_done": checkpoint["epoch"],
        "final_top1": finite[-1] if finite else None,
        "final_val_top1": finite_val[-1] if finite_val else None,
        "best_top1": max(finite) if finite else None,
        "time_to_train": history[-1]["time"] if history else 0.0,
        "steps_per_epoch": checkpoint.get("steps_per_epoch"),
        "hyperparams": checkpoint["hyperparams"], "history": history,
        "machines": machines_so_far(checkpoint),
        "layer_stats": thinned(checkpoint["layer_stats"]) if checkpoint.get("layer_stats", {}).get("steps") else None,
    }


def read_results(results_dir):
    path = os.path.join(results_dir, "results.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ResultsError(f"no readable results in {results_dir}: {e}") from None


def steps_to_target(cell, target):
    """Optimizer steps at the end of the first evaluated epoch whose test top-1 reached ``target``
    %, or None (not reached, or a record without steps per epoch). Resolution: the evaluation
    interval (EVAL_EVERY epochs)."""
    if not cell.get("steps_per_epoch"):
        return None
    for row in evaluated(cell["history"]):
        if row["test_acc"] >= target:  # False for nan
            return row["epoch"] * cell["steps_per_epoch"]
    return None


def selection_top1(cell):
    """What a run is chosen by: its final validation top-1 when it held out a validation split,
    else its final test top-1 (the sweeps recorded before the split existed)."""
    return cell["final_val_top1"] if cell.get("final_val_top1") is not None else cell["final_top1"]


def chosen_on(results):
    """"validation" when the sweep's runs held out a validation split, else "test"."""
    return "validation" if any(c.get("final_val_top1") is not None for c in results["cells"]) else "test"


def is_grid_run(cell):
    """One of its grid's peak LRs at the base seed (or a cell's only run), not an extra seed."""
    return cell.get("role", "grid") == "grid"


def best_grid_run(cells):
    """The grid run (base seed) with the highest final top-1 among those that finished without
    diverging, on validation where there is a split (``selection_top1``); None if there is none."""
    finished = [c for c in cells if is_grid_run(c) and c["status"] == "finished"
                and c.get("final_top1") is not None]
    return max(finished, key=selection_top1, default=None)


def at_grid_edge(best, runs):
    """True if ``best`` has the smallest or the largest peak LR of a grid of 3 or more: the
    best LR may then lie beyond the grid, which should be extended."""
    peaks = sorted({c["peak_lr"] for c in runs if is_grid_run(c)})
    return len(peaks) >= 3 and best["peak_lr"] in (peaks[0], peaks[-1])


def groups(results):
    """{(batch size, recipe, with LARS): its runs}, sorted by batch size, then recipe in the order
    the sweep ran them, SGD first. The recipe is "" in a sweep without SWEEP_RECIPES."""
    grouped = {}
    for cell in results["cells"]:
        grouped.setdefault((cell["batch_size"], cell.get("recipe", ""), cell["with_lars"]), []).append(cell)
    recipes = list(dict.fromkeys(recipe for _, recipe, _ in grouped))
    return dict(sorted(grouped.items(), key=lambda item: (item[0][0], recipes.index(item[0][1]), item[0][2])))


def table_rows(grouped):
    """The (batch size, recipe) pairs of ``groups``, in its order: one table row each."""
    return list(dict.fromkeys((batch, recipe) for batch, recipe, _ in grouped))


def row_label(batch, recipe):
    return f"batch {batch}" + (f", {recipe}" if recipe else "")


def best_of_grid(runs):
    """(best grid run, every finished run at its peak LR and settings but the seed) or (None, [])."""
    best = best_grid_run(runs)
    if best is None:
        return None, []
    same_lr = [c for c in runs if c["status"] == "finished" and c.get("peak_lr") == best.get("peak_lr")]
    return best, same_lr


def mean_and_sd(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def lr_x_tc(cell):
    return cell["peak_lr"] * cell["trust_coef"]


def targets(results):
    """The test top-1 targets of the steps-to-target table: the sweep's SWEEP_TARGETS."""
    return tuple(results.get("targets") or TARGETS)


def reference_runs(results):
    """{(batch size, with LARS): the runs that stand for that cell in the reference sweep}, or {}
    without one: a grid's best LR with every seed (of the chosen recipe, with recipes), or the
    one run of a sweep without a grid."""
    if not results.get("reference"):
        return {}
    try:
        reference = read_results(results["reference"])
    except ResultsError:
        return {}
    if not reference.get("grid"):
        return {(c["batch_size"], c["with_lars"]): [c] for c in reference["cells"] if c["status"] in DONE}
    return chosen_runs(reference)


def chosen_runs(results):
    """{(batch size, with LARS): every seed of the best peak LR of the chosen recipe} of a grid
    sweep: the first of ``recipe_ranking``."""
    return {key: ranked[0][3] for key, ranked in recipe_ranking(results).items()}


def reference_cells(results, runs=None):
    """{(batch size, with LARS): the reference sweep's top-1 there (a grid's: its best LR's mean
    over seeds; None for a run that diverged without an accuracy)}, or {} without one. ``runs``:
    ``reference_runs(results)`` when the caller has it already."""
    runs = reference_runs(results) if runs is None else runs
    top1 = {key: [c["final_top1"] for c in cell_runs] for key, cell_runs in runs.items()}
    return {key: statistics.mean(values) if None not in values else None for key, values in top1.items()}


def recipe_ranking(results):
    """{(batch size, with LARS): [(score, recipe, best run, runs at its LR)]}: every recipe at its
    grid's best peak LR, ranked by its mean final top-1 over that LR's seeds (on validation where
    there is a split, ``selection_top1``); the first is the one chosen."""
    ranking = {}
    for (batch, recipe, with_lars), runs in groups(results).items():
        best, same_lr = best_of_grid(runs)
        if best is not None:
            score = statistics.mean(selection_top1(c) for c in same_lr)
            ranking.setdefault((batch, with_lars), []).append((score, recipe, best, same_lr))
    for ranked in ranking.values():
        ranked.sort(key=lambda r: -r[0])
    return dict(sorted(ranking.items()))


def answer_rows(grouped):
    """The smallest batch against the largest, per optimizer and recipe run at the largest: [(with
    LARS, recipe, the recipe at the smallest batch, its best run and seed runs there, the same at the
    largest)]. A recipe run only at the largest batch is compared with the optimizer's recipe that
    was run at both (the one recipe of the answer), or, while there is none, with its best recipe
    at the smallest batch (on validation where there is a split)."""
    batches = sorted({batch for batch, _, _ in grouped})
    if len(batches) < 2:
        return []
    small, large = batches[0], batches[-1]
    rows = []
    for with_lars in (False, True):
        recipes = [recipe for batch, recipe, lars in grouped if batch == large and lars == with_lars]
        done_small = {recipe: best_of_grid(runs)[1] for (batch, recipe, lars), runs in grouped.items()
                      if batch == small and lars == with_lars and best_of_grid(runs)[0] is not None}
        at_both = [r for r in recipes if r in done_small]
        fallback = at_both[0] if at_both else max(
            done_small, key=lambda r: statistics.mean(map(selection_top1, done_small[r])), default=None)
        for recipe in recipes:
            base = recipe if recipe in at_both else fallback
            large_best = best_of_grid(grouped[large, recipe, with_lars])
            if base is not None and large_best[0] is not None:
                rows.append((with_lars, recipe, base, best_of_grid(grouped[small, base, with_lars]), large_best))
    return rows


def steps_at_best_lr(runs, goals=TARGETS):
    """{target: steps each run at the best peak LR (every seed) took to reach it, for those that
    did; "runs": how many runs that is}; {} before the grid has a best."""
    best, same_lr = best_of_grid(runs)
    if best is None:
        return {}
    steps = {target: [s for s in (steps_to_target(c, target) for c in same_lr) if s is not None]
             for target in goals}
    return {**steps, "runs": len(same_lr)}


def mean_steps(runs, target):
    """The mean steps to ``target`` over every seed at the best LR, or None unless all reached it."""
    steps = steps_at_best_lr(runs, (target,))
    reached = steps.get(target)
    return statistics.mean(reached) if reached and len(reached) == steps["runs"] else None

