"""A sweep's results: results.json from the runs' checkpoints, tables as results.md, and
figures. Used by sweep.py and by ``python val.py --results=DIR``.

A sweep without an LR grid gets the original README's tables (one without LARS, one with). A
grid sweep (SWEEP_PEAK_LRS) gets the study's: the best of each grid with the mean and spread
over its seeds, the whole grid, and steps to target accuracies (Shallue et al. 2018).
"""

import json
import math
import os
import statistics

from checkpoints import CheckpointError, load_checkpoint
from diagnostics import plot_layers, thinned
from significance import welch_interval
from utils import evaluated, format_accuracy, format_duration, write_atomically

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
        "machine": checkpoint.get("machine"),
        "layer_stats": thinned(checkpoint["layer_stats"]) if checkpoint.get("layer_stats", {}).get("steps") else None,
    }


# --- what the tables are made of -----------------------------------------------------------

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


def best_grid_run(cells):
    """The grid run (base seed) with the highest final top-1 among those that finished without
    diverging, on validation where there is a split (``selection_top1``); None if there is none."""
    finished = [c for c in cells if c.get("role", "grid") == "grid" and c["status"] == "finished"
                and c.get("final_top1") is not None]
    return max(finished, key=selection_top1, default=None)


def at_grid_edge(best, runs):
    """True if ``best`` has the smallest or the largest peak LR of a grid of 3 or more: the
    best LR may then lie beyond the grid, which should be extended."""
    peaks = sorted({c["peak_lr"] for c in runs if c.get("role", "grid") == "grid"})
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
    except CheckpointError:
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


# --- files ---------------------------------------------------------------------------------

def write_results(results_dir, results):
    """results.json, results.md and the figures, each replaced atomically."""
    _write_text(os.path.join(results_dir, "results.json"), json.dumps(results, indent=1) + "\n")
    _write_text(os.path.join(results_dir, "results.md"), markdown(results))
    if results.get("grid"):
        plot_grid(results_dir, results)
    else:
        plot(results_dir, results)
    plot_layer_figures(results_dir, results)


def read_results(results_dir):
    path = os.path.join(results_dir, "results.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"no readable results in {results_dir}: {e}") from None


def _write_text(path, text):
    write_atomically(path, lambda f: f.write(text), mode="w")


# --- tables --------------------------------------------------------------------------------

def markdown(results):
    """results.md: the original README's tables, or the study's tables for a grid."""
    machines = _machine_labels(results["cells"])
    lines = [f"# {results['preset']}", "", f"Command: `{results['command']}`", ""]
    lines += _grid_tables(results, machines) if results.get("grid") else _original_tables(results, machines)
    for machine, label in machines.items():
        m = json.loads(machine)
        lines.append(f"{label}Machine: {m['cpu']}, {m['cores']} cores, device {m['device']} "
                     f"({m['accelerator']}), {m['processes']} process(es), torch {m['torch']}.")
    trained = [c for c in results["cells"] if c["status"] in DONE]
    lines.append(f"{len(trained)} runs, {format_duration(sum(c['time_to_train'] for c in trained))} "
                 "of training in all.")
    lines.append("Time to train counts training steps only, not evaluation. (nan): the run diverged "
                 "(non-finite loss, or an epoch's mean training loss above DIVERGENCE_LOSS); the "
                 "accuracy shown is the last one it reached.")
    return "\n".join(lines) + "\n"


def _original_tables(results, machines):
    """One table without LARS, one with; batch 128 is the base line."""
    lines = []
    for with_lars, title in ((False, "Without LARS"), (True, "With LARS")):
        cells = sorted((c for c in results["cells"] if c["with_lars"] is with_lars), key=lambda c: c["batch_size"])
        if not cells:
            continue
        lines += [f"## {title}", "", "| Batch | Base LR | top-1 Accuracy, % | Time to train |", "|---|---|---|---|"]
        lines += [_original_row(cell, machines) for cell in cells]
        lines.append("")
    return lines


def _original_form(results, machines, validation, reference):
    """The best of grid as the original README's two tables: each batch size's chosen run (its
    recipe's, with recipes) and the mean over its seeds; Base LR is the LR before warm-up."""
    chosen = chosen_runs(results)
    lines = ["", "## In the original README's form", "",
             "The chosen peak LR (and recipe) of each batch size, as above: top-1 is the test set's mean ± "
             "sample standard deviation over its seeds; Base LR is the run's LR before warm-up"
             + (f"; the last column is {results['reference']}'s top-1 at that batch size" if reference else "") + "."]
    for with_lars, title in ((False, "Without LARS"), (True, "With LARS")):
        batches = sorted(b for b, lars in chosen if lars is with_lars)
        if not batches:
            continue
        header = "| Batch | Base LR | top-1 Accuracy, % | Time to train |" + (" val % |" if validation else "")
        header += f" {results['reference']} |" if reference else ""
        lines += ["", f"### {title}", "", header, "|" + "---|" * (header.count("|") - 1)]
        for batch in batches:
            runs = chosen[batch, with_lars]
            seconds = statistics.mean(c["time_to_train"] for c in runs)
            row = (f"| {_batch_label(batch)} | {runs[0]['hyperparams']['LR']:g} | "
                   f"{_mean_over_seeds(runs, 'final_top1')} | {_time(runs[0], machines, seconds)} |")
            row += f" {_mean_over_seeds(runs, 'final_val_top1')} |" if validation else ""
            row += f" {format_accuracy(reference.get((batch, with_lars)))} |" if reference else ""
            lines.append(row)
    return lines


def _batch_label(batch):
    return f"{batch} (base line)" if batch == 128 else str(batch)


def _original_row(cell, machines):
    batch = _batch_label(cell["batch_size"])
    if cell["status"] == "not run":
        return f"| {batch} | | not run | |"
    lr = f"{cell['hyperparams']['LR']:g}"
    return f"| {batch} | {lr} | {_accuracy(cell)} | {_time(cell, machines)} |"


def _evaluations(results):
    """When the runs' test accuracy was read: "the end of each epoch", or of every EVAL_EVERY-th."""
    every = sorted({c["hyperparams"].get("EVAL_EVERY", 1) for c in results["cells"] if c.get("hyperparams")}) or [1]
    return "the end of each epoch" if every == [1] else \
        f"the end of every {' or '.join(map(ordinal, every))} epoch and of the last"


def ordinal(n):
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _accuracy(cell, key="final_top1"):
    if cell["status"] == "not run":
        return "not run"
    accuracy = format_accuracy(cell.get(key))
    if cell["status"] == "diverged":
        accuracy += " (nan)"
    elif cell["status"] == "partial":
        accuracy += f" (epoch {cell['epochs_done']} of {cell['hyperparams']['NUM_EPOCHS']})"
    return accuracy


def _time(cell, machines, seconds=None):
    label = machines[_machine_key(cell)].strip() if cell.get("machine") else ""
    seconds = cell["time_to_train"] if seconds is None else seconds
    return f"{format_duration(seconds)} {label}".rstrip()


def _lr_label(cell):
    lr = f"{cell['peak_lr']:g}"
    return f"{lr} ({lr_x_tc(cell):.3g})" if cell["with_lars"] else lr


def _grid_tables(results, machines):
    grouped = groups(results)
    rows = table_rows(grouped)
    with_recipes = any(recipe for _, recipe in rows)
    split = chosen_on(results)
    validation = split == "validation"
    ref_runs = reference_runs(results)
    reference = reference_cells(results, ref_runs)
    recipe_column = " Recipe |" if with_recipes else ""
    lines = ["## Best of grid", "",
             f"The best peak LR of each batch size{', recipe' if with_recipes else ''} and optimizer is the grid "
             f"run at the base seed with the highest final {split} top-1 that did not diverge"
             f"{' (chosen on the validation split, never trained on; reported on the test set)' if validation else ''}"
             "; top-1 is the test set's, mean ± sample standard deviation over every seed run at that LR "
             "(n runs), time to train their mean. LARS: peak LR (lr x trust coefficient). (edge of grid): "
             "the best is the grid's smallest or largest LR, so the grid needs extending.", ""]
    val_header = lambda name: f" {name}: val % |" if validation else ""  # noqa: E731
    header = (f"| Batch |{recipe_column} SGD: peak LR |{val_header('SGD')} SGD: top-1 % | SGD: time to train |"
              f" LARS: peak LR (lr x tc) |{val_header('LARS')} LARS: top-1 % | LARS: time to train |")
    if reference:
        header += f" {results['reference']}: SGD | LARS |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for batch, recipe in rows:
        row = f"| {batch} |" + (f" {recipe} |" if with_recipes else "")
        for with_lars in (False, True):
            runs = grouped.get((batch, recipe, with_lars), [])
            best, same_lr = best_of_grid(runs)
            if best is None:  # peak LR, (validation,) test top-1, time
                row += "".join(f" {cell} |" for cell in ["", *["-"] * (1 + validation), ""])
                continue
            seconds = statistics.mean(c["time_to_train"] for c in same_lr)
            edge = " (edge of grid)" if at_grid_edge(best, runs) else ""
            row += f" {_lr_label(best)}{edge} |"
            if validation:
                row += f" {_mean_over_seeds(same_lr, 'final_val_top1')} |"
            row += f" {_mean_over_seeds(same_lr, 'final_top1')} | {_time(best, machines, seconds)} |"
        if reference:
            row += "".join(f" {format_accuracy(reference.get((batch, lars)))} |"
                           for lars in (False, True))
        lines.append(row)
    lines += _original_form(results, machines, validation, reference)
    if with_recipes:
        lines += _answer(grouped, validation)
        lines += _recipe_choice(results, split)
    lines += ["", "## Whole grid", "",
              f"| Batch |{recipe_column} Optimizer | Peak LR (lr x tc) | Seed |{' val % |' if validation else ''} "
              "top-1 % | Time to train |",
              "|---|" + "---|" * (5 + with_recipes + validation)]
    for (batch, recipe, with_lars), runs in grouped.items():
        for cell in sorted(runs, key=lambda c: (c["peak_lr"], c["seed"])):
            time = _time(cell, machines) if cell["status"] != "not run" else ""
            val = f" {_accuracy(cell, 'final_val_top1')} |" if validation else ""
            lines.append(f"| {batch} |" + (f" {recipe} |" if with_recipes else "") +
                         f" {'LARS' if with_lars else 'SGD'} | {_lr_label(cell)} | {cell['seed']} |{val} "
                         f"{_accuracy(cell)} | {time} |")
    goals = targets(results)
    goal_columns = " | ".join(f"{t} %" for t in goals)
    reference_steps = {batch: _reference_steps_row(results, ref_runs, batch, with_recipes, goals)
                       for batch in dict.fromkeys(batch for batch, _ in rows)}
    lines += ["", "## Steps to target", "",
              "Optimizer steps until the test top-1 first reached each target, for the best peak LR of each "
              "cell (above): the mean over its seeds, and '(k of n)' where only k of its n seeds reached "
              f"it; '-': none did; blank: no run done yet. Read at {_evaluations(results)}, so a value is "
              "known to within the steps between two readings (Steps/epoch each epoch), and under a fixed-length "
              "schedule the later targets follow the LR decay. Perfect scaling halves the steps when the batch "
              "doubles." + (f" Rows marked ({_reference_name(results)}): the same targets in the runs of "
                            f"{results['reference']} that its tables report." if any(reference_steps.values())
                            else ""), "",
              f"| Batch |{recipe_column} Steps/epoch | SGD: {goal_columns} | LARS: {goal_columns} |",
              "|---|" + "---|" * (1 + with_recipes + 2 * len(goals))]
    for batch, recipe in rows:
        row = f"| {batch} |" + (f" {recipe} |" if with_recipes else "")
        per_epoch = {c.get("steps_per_epoch") for lars in (False, True)
                     for c in grouped.get((batch, recipe, lars), []) if c.get("steps_per_epoch")}
        row += f" {', '.join(map(str, sorted(per_epoch)))} |"
        for with_lars in (False, True):
            steps = steps_at_best_lr(grouped.get((batch, recipe, with_lars), []), goals)
            row += "".join(f" {steps_cell(steps, t)} |" for t in goals)
        lines.append(row)
        if (batch, recipe) == [r for r in rows if r[0] == batch][-1]:
            lines += reference_steps[batch]
    return lines + [""]


def _reference_name(results):
    return os.path.basename(os.path.normpath(results["reference"]))


def _reference_steps_row(results, runs, batch, with_recipes, goals):
    """[the steps-to-target row of the reference sweep's runs (``reference_runs``) at ``batch``],
    or [] when they have none there or did not record their steps per epoch (older sweeps)."""
    cells = [c for lars in (False, True) for c in runs.get((batch, lars), [])]
    if not cells or not all(c.get("steps_per_epoch") for c in cells):
        return []
    row = f"| {batch} ({_reference_name(results)}) |" + (" |" if with_recipes else "")
    row += f" {', '.join(map(str, sorted({c['steps_per_epoch'] for c in cells})))} |"
    for with_lars in (False, True):
        steps = steps_at_best_lr(runs.get((batch, with_lars), []), goals)
        row += "".join(f" {steps_cell(steps, t)} |" for t in goals)
    return [row]


def answer_rows(grouped):
    """The smallest batch against the largest, per optimizer and recipe run at the largest: [(with
    LARS, recipe, the recipe at the smallest batch, its best run and seed runs there, the same at the
    largest)]. A recipe run only at the largest batch is compared with the optimizer's recipe that
    was run at both (the one recipe of the answer)."""
    batches = sorted({batch for batch, _, _ in grouped})
    if len(batches) < 2:
        return []
    small, large = batches[0], batches[-1]
    rows = []
    for with_lars in (False, True):
        recipes = [recipe for batch, recipe, lars in grouped if batch == large and lars == with_lars]
        at_both = [r for r in recipes if best_of_grid(grouped.get((small, r, with_lars), []))[0] is not None]
        for recipe in recipes:
            base = recipe if recipe in at_both else (at_both[0] if at_both else None)
            large_best = best_of_grid(grouped[large, recipe, with_lars])
            if base is not None and large_best[0] is not None:
                rows.append((with_lars, recipe, base, best_of_grid(grouped[small, base, with_lars]), large_best))
    return rows


def _answer(grouped, validation):
    """The answer: from the smallest batch to the largest, what each optimizer loses on test top-1
    (mean over seeds, with Welch's 95 % interval), and the lead of LARS over SGD at the largest."""
    rows = answer_rows(grouped)
    if not rows:
        return []
    batches = sorted({batch for batch, _, _ in grouped})
    small, large = batches[0], batches[-1]
    val = lambda runs: f" {_mean_over_seeds(runs, 'final_val_top1')} |" if validation else ""  # noqa: E731
    header = (f"| Optimizer | Recipe | {small}: peak LR |{f' {small}: val % |' if validation else ''} {small}: top-1 % "
              f"| {large}: peak LR |{f' {large}: val % |' if validation else ''} {large}: top-1 % | "
              f"loss, top-1 points (95 % interval) |")
    lines = ["", "## From the smallest batch to the largest", "",
             f"Each cell at its best peak LR{' on validation' if validation else ''}, top-1 on the test set as "
             f"mean ± sample standard deviation over that LR's seeds. The loss is the {small} cell's mean minus the "
             f"{large} cell's, with Welch's 95 % interval (Student t on the Welch-Satterthwaite degrees of freedom; "
             "'-' with fewer than 2 seeds on a side): with 2 or 3 seeds the interval is wide, and a loss whose "
             "interval holds 0 is not shown to be one. A recipe run only at the largest batch is compared with "
             f"the optimizer's recipe run at both (named in brackets).", "", header,
             "|" + "---|" * (header.count("|") - 1)]
    finals = {}
    for with_lars, recipe, base, (small_best, small_runs), (large_best, large_runs) in rows:
        finals[with_lars, recipe] = [c["final_top1"] for c in large_runs]
        loss = welch_interval([c["final_top1"] for c in small_runs], [c["final_top1"] for c in large_runs])
        difference = statistics.mean(c["final_top1"] for c in small_runs) - statistics.mean(finals[with_lars, recipe])
        label = recipe if base == recipe else f"{recipe} ({small}: {base})"
        lines.append(f"| {'LARS' if with_lars else 'SGD'} | {label} | {_lr_label(small_best)} |{val(small_runs)} "
                     f"{_mean_over_seeds(small_runs, 'final_top1')} | {_lr_label(large_best)} |{val(large_runs)} "
                     f"{_mean_over_seeds(large_runs, 'final_top1')} | {_interval(difference, loss)} |")
    for recipe in dict.fromkeys(recipe for _, recipe, *_ in rows):
        if (False, recipe) in finals and (True, recipe) in finals:
            lars, sgd = finals[True, recipe], finals[False, recipe]
            lead = statistics.mean(lars) - statistics.mean(sgd)
            lines += ["", f"At batch {large}, recipe {recipe}: LARS leads SGD by "
                          f"{_interval(lead, welch_interval(lars, sgd))} top-1 points."]
    return lines


def _interval(difference, welch):
    return f"{difference:.2f} ({welch['low']:.2f} to {welch['high']:.2f})" if welch else f"{difference:.2f} (-)"


def _mean_over_seeds(runs, key):
    """'mean ± sd (n=N)' of ``key`` over ``runs``, or 'mean (n=1)'."""
    mean, sd = mean_and_sd([c[key] for c in runs])
    return f"{mean:.2f} ± {sd:.2f} (n={len(runs)})" if sd is not None else f"{mean:.2f} (n=1)"


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


def _recipe_choice(results, split):
    """The "Recipe choice" table: ``recipe_ranking`` for each batch size and optimizer."""
    lines = ["", "## Recipe choice", "",
             f"For each batch size and optimizer, every recipe at its best peak LR, ranked by final {split} "
             f"top-1 (mean over that LR's seeds): the first is chosen. The test top-1 beside it is reported, "
             f"not chosen on.", "",
             f"| Batch | Optimizer | Recipe | Peak LR (lr x tc) | {split} % | test top-1 % | Chosen |",
             "|---|---|---|---|---|---|---|"]
    for (batch, with_lars), ranked in recipe_ranking(results).items():
        for i, (score, recipe, best, same_lr) in enumerate(ranked):
            lines.append(f"| {batch} | {'LARS' if with_lars else 'SGD'} | {recipe} | {_lr_label(best)} | "
                         f"{score:.2f} | {_mean_over_seeds(same_lr, 'final_top1')} | {'yes' if i == 0 else ''} |")
    return lines


def steps_cell(steps, target):
    """A steps-to-target table cell: blank before any run is done, '-' when none reached it,
    the mean over the runs, with '(k of n)' when only k of the n runs reached it."""
    if not steps:
        return ""
    reached, n = steps[target], steps["runs"]
    if not reached:
        return "-"
    mean = f"{statistics.mean(reached):.0f}"
    return mean if len(reached) == n else f"{mean} ({len(reached)} of {n})"


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


def _machine_labels(cells):
    """Each machine the cells ran on (as JSON) -> its label: "" for a single machine, else
    "(a) ", "(b) ", ..., which the table puts after each time, as times differ by machine."""
    machines = sorted({_machine_key(c) for c in cells if c.get("machine")})
    if len(machines) == 1:
        return {machines[0]: ""}
    return {m: f"({chr(ord('a') + i)}) " for i, m in enumerate(machines)}


def _machine_key(cell):
    return json.dumps(cell["machine"], sort_keys=True)


# --- figures -------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _accuracy_panels(results, cells_of, title):
    """Test accuracy per epoch, one panel per optimizer the sweep has, one line per batch size."""
    plt = _pyplot()
    optimizers = sorted({c["with_lars"] for c in results["cells"]})  # a LARS-only sweep: one panel
    fig, axes = plt.subplots(1, len(optimizers), figsize=(6 * len(optimizers), 4.5), sharey=True, squeeze=False)
    # One colour per label across both panels, so the one shared legend names every line
    # (a recipe sweep has more labels than tab10's 10 colours).
    def label_of(cell):
        return row_label(cell["batch_size"], cell.get("recipe", ""))

    labels = list(dict.fromkeys(label_of(c) for with_lars in optimizers for c in cells_of(with_lars)))
    colours = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    colour_of = {label: colours(i % colours.N) for i, label in enumerate(labels)}
    for ax, with_lars in zip(axes[0], optimizers):
        for cell in cells_of(with_lars):
            rows = evaluated(cell["history"])
            ax.plot([row["epoch"] for row in rows], [row["test_acc"] for row in rows], ".-",
                    color=colour_of[label_of(cell)], label=label_of(cell))
        ax.set_title(f"{results['preset']}: {title}{'with' if with_lars else 'without'} LARS")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("test top-1 accuracy, %")
    handles = {line.get_label(): line for ax in axes[0] for line in ax.lines}
    if handles:  # one legend beside the panels, where it covers no curve
        axes[0, -1].legend(handles.values(), handles.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


def _batch_axis(ax, batch_sizes):
    ax.set_xscale("log", base=2)
    ax.set_xticks(batch_sizes, labels=[str(b) for b in batch_sizes])
    ax.minorticks_off()
    ax.set_xlabel("batch size")


def plot(results_dir, results):
    """accuracy.png: test accuracy per epoch per batch size, without and with LARS side by side;
    batch_size.png: final top-1 against batch size for both."""
    plt = _pyplot()

    def cells_of(with_lars):
        return sorted((c for c in results["cells"] if c["with_lars"] is with_lars and c["history"]),
                      key=lambda c: c["batch_size"])

    _save(_accuracy_panels(results, cells_of, ""), os.path.join(results_dir, "accuracy.png"))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for with_lars in (False, True):
        cells = [c for c in cells_of(with_lars) if c.get("final_top1") is not None]
        if cells:
            ax.plot([c["batch_size"] for c in cells], [c["final_top1"] for c in cells], "o-",
                    label="LARS" if with_lars else "SGD")
    _batch_axis(ax, sorted({c["batch_size"] for c in results["cells"]}))
    ax.set_ylabel("final test top-1 accuracy, %")
    ax.set_title(results["preset"])
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    _save(fig, os.path.join(results_dir, "batch_size.png"))


def plot_grid(results_dir, results):
    """lr_grid.png: final top-1 against peak LR (LARS: lr x tc), one curve per batch size (and
    recipe), SGD and LARS panels, diverged runs as crosses at their last accuracy; with a
    validation split, validation solid and test dashed;
    batch_size.png: best top-1 (mean and sd over seeds) against batch size, with the reference
    sweep's cells; steps.png: steps to the first two targets (50 % and 70 % unless SWEEP_TARGETS
    says otherwise) against batch size (mean over the best LR's seeds, where all reached it),
    log-log, with the perfect-scaling line; accuracy.png: test
    accuracy per epoch of each cell's best run."""
    plt = _pyplot()
    grouped = groups(results)
    rows = table_rows(grouped)
    recipes = list(dict.fromkeys(recipe for _, recipe in rows))
    batch_sizes = sorted({b for b, _ in rows})
    colours = plt.cm.viridis([i / max(1, len(rows) - 1) for i in range(len(rows))])
    split = chosen_on(results)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, with_lars in zip(axes, (False, True)):
        for colour, (batch, recipe) in zip(colours, rows):
            runs = sorted((c for c in grouped.get((batch, recipe, with_lars), [])
                           if c.get("role", "grid") == "grid" and c["status"] in DONE and c.get("final_top1") is not None),
                          key=lambda c: c["peak_lr"])
            x = [lr_x_tc(c) if with_lars else c["peak_lr"] for c in runs]
            if not runs:
                continue
            ax.plot(x, [selection_top1(c) for c in runs], "-", color=colour, label=row_label(batch, recipe))
            if split == "validation":  # the test set beside what the LR was chosen on
                ax.plot(x, [c["final_top1"] for c in runs], "--", color=colour, alpha=0.6)
            for xi, c in zip(x, runs):
                ax.plot(xi, selection_top1(c), "x" if c["status"] == "diverged" else "o", color=colour)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("peak LR x trust coefficient" if with_lars else "peak LR")
        solid = "solid: validation, dashed: test; " if split == "validation" else ""
        ax.set_title(f"{results['preset']}: {'LARS' if with_lars else 'SGD'}\n({solid}x: diverged)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    axes[0].set_ylabel("final top-1 accuracy, %" if split == "validation" else f"final {split} top-1 accuracy, %")
    _save(fig, os.path.join(results_dir, "lr_grid.png"))

    fig, ax = plt.subplots(figsize=(6, 4.5))
    reference = reference_cells(results)
    for with_lars, name in ((False, "SGD"), (True, "LARS")):
        for recipe in recipes:
            points = []
            for batch in batch_sizes:
                best, same_lr = best_of_grid(grouped.get((batch, recipe, with_lars), []))
                if best is not None:
                    mean, sd = mean_and_sd([c["final_top1"] for c in same_lr])
                    points.append((batch, mean, sd or 0.0))
            if points:
                ax.errorbar(*zip(*points), fmt="o-", capsize=3, label=f"{name}, {recipe or 'best of grid'}")
        ref = sorted((b, acc) for (b, lars), acc in reference.items() if lars is with_lars and acc is not None)
        if ref:
            ax.plot(*zip(*ref), "s--", alpha=0.6, label=f"{name}, {os.path.basename(results['reference'])}")
    _batch_axis(ax, batch_sizes)
    ax.set_ylabel("final test top-1 accuracy, %")
    ax.set_title(results["preset"])
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # none while every run of the grid diverged
        ax.legend(fontsize=8, loc="lower left")
    _save(fig, os.path.join(results_dir, "batch_size.png"))

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for with_lars, name in ((False, "SGD"), (True, "LARS")):
        for recipe in recipes:
            for target, style in zip(targets(results)[:2], ("o-", "s-")):
                points = [(b, mean_steps(grouped.get((b, recipe, with_lars), []), target)) for b in batch_sizes]
                points = [(b, s) for b, s in points if s is not None]
                if points:
                    line, = ax.plot(*zip(*points), style, label=f"{name}{', ' + recipe if recipe else ''}, {target} %")
                    b0, s0 = points[0]  # perfect scaling from the smallest batch that reached it
                    ax.plot(batch_sizes, [s0 * b0 / b for b in batch_sizes], ":", color=line.get_color(), alpha=0.5)
    _batch_axis(ax, batch_sizes)
    ax.set_yscale("log")
    ax.set_ylabel("steps to reach the target (dotted: perfect scaling)")
    ax.set_title(f"{results['preset']}: steps to target test top-1")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8, loc="best")
    _save(fig, os.path.join(results_dir, "steps.png"))

    best_runs = {key: best_grid_run(runs) for key, runs in grouped.items()}

    def cells_of(with_lars):
        return [best for (_, _, lars), best in best_runs.items() if lars is with_lars and best is not None]

    _save(_accuracy_panels(results, cells_of, "best of grid, "), os.path.join(results_dir, "accuracy.png"))


def plot_layer_figures(results_dir, results):
    """layers_<batch>[_<recipe>]_<sgd|lars>.png: each cell's layer statistics (the best run's, in
    a grid), from the records results.json keeps."""
    for (batch, recipe, with_lars), runs in groups(results).items():
        run = best_grid_run(runs) if results.get("grid") else runs[0]
        if run is not None and run.get("layer_stats"):
            name = "lars" if with_lars else "sgd"
            figure = f"layers_{batch}{'_' + recipe if recipe else ''}_{name}.png"
            plot_layers(run["layer_stats"], os.path.join(results_dir, figure), f"{row_label(batch, recipe)}, {name.upper()}")


def _save(fig, path):
    import matplotlib.pyplot as plt

    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
