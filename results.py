"""A sweep's results written: results.json from the runs' summaries, its tables as results.md,
and the figures (figures.py). Used by sweep.py and by ``python val.py --results=DIR``; which runs
the tables stand on is choosing.py's.

A sweep without an LR grid gets the original README's tables (one without LARS, one with). A
grid sweep (SWEEP_PEAK_LRS) gets the study's: the best of each grid with the mean and spread
over its seeds, the whole grid, and steps to target accuracies (Shallue et al. 2018).
"""

import json
import os
import statistics

from choosing import (DONE, answer_rows, at_grid_edge, best_of_grid, chosen_on, chosen_runs, groups, lr_x_tc, mean_and_sd,
                      recipe_ranking, reference_cells, reference_runs, steps_at_best_lr, table_rows, targets)
from figures import plot, plot_grid, plot_layer_figures
from significance import welch_interval
from utils import format_accuracy, format_duration, machines_so_far, without_epoch, write_atomically


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
        lines.append(f"{f'({label}) ' if label else ''}Machine: {m['cpu']}, {m['cores']} cores, device {m['device']} "
                     f"({m['accelerator']}), {m['processes']} process(es), torch {m['torch']}.")
    if any(len(machines_so_far(c)) > 1 for c in results["cells"]):
        lines.append("A time with more than one label: the run trained under more than one machine description "
                     "(another machine, or the same one: older records name a CPU without its family and "
                     "model); results.json gives the epoch from which each trained it.")
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
    labels = [machines[_machine_key(m)] for m in machines_so_far(cell)]
    seconds = cell["time_to_train"] if seconds is None else seconds
    return f"{format_duration(seconds)} ({', '.join(labels)})" if any(labels) else format_duration(seconds)


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


def _machine_labels(cells):
    """Each machine the cells ran on (as JSON) -> its label: "" for a single machine, else
    "a", "b", ..., which the table puts after each time, as times differ by machine."""
    machines = sorted({_machine_key(m) for c in cells for m in machines_so_far(c)})
    if len(machines) == 1:
        return {machines[0]: ""}
    return {m: chr(ord('a') + i) for i, m in enumerate(machines)}


def _machine_key(machine):
    return json.dumps(without_epoch(machine), sort_keys=True)
