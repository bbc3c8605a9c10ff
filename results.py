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

from diagnostics import plot_layers, thinned
from utils import CheckpointError, format_accuracy, format_duration, load_checkpoint, write_atomically

DONE = ("finished", "diverged")
TARGETS = (50, 70, 80)  # test top-1 %, for the steps-to-target table


def cell_summary(path, num_epochs):
    """One run as plain values; ``status`` is "finished", "diverged", "partial" or "not run"."""
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError:
        return {"status": "not run", "history": []}
    history = checkpoint["history"]
    finite = [row["test_acc"] for row in history if not math.isnan(row["test_acc"])]
    if checkpoint["diverged"]:
        status = "diverged"
    else:
        status = "finished" if checkpoint["epoch"] >= num_epochs else "partial"
    return {
        "status": status, "epochs_done": checkpoint["epoch"],
        "final_top1": finite[-1] if finite else None,
        "best_top1": max(finite) if finite else None,
        "time_to_train": history[-1]["time"] if history else 0.0,
        "steps_per_epoch": checkpoint.get("steps_per_epoch"),
        "hyperparams": checkpoint["hyperparams"], "history": history,
        "machine": checkpoint.get("machine"),
        "layer_stats": thinned(checkpoint["layer_stats"]) if checkpoint.get("layer_stats", {}).get("steps") else None,
    }


# --- what the tables are made of -----------------------------------------------------------

def steps_to_target(cell, target):
    """Optimizer steps at the end of the first epoch whose test top-1 reached ``target`` %, or
    None (not reached, or a record without steps per epoch). Resolution: one epoch."""
    if not cell.get("steps_per_epoch"):
        return None
    for row in cell["history"]:
        if row["test_acc"] >= target:  # False for nan
            return row["epoch"] * cell["steps_per_epoch"]
    return None


def best_grid_run(cells):
    """The grid run (base seed) with the highest final top-1 among those that finished without
    diverging; None if there is none."""
    finished = [c for c in cells if c.get("role", "grid") == "grid" and c["status"] == "finished"
                and c.get("final_top1") is not None]
    return max(finished, key=lambda c: c["final_top1"], default=None)


def at_grid_edge(best, runs):
    """True if ``best`` has the smallest or the largest peak LR of a grid of 3 or more: the
    best LR may then lie beyond the grid, which should be extended."""
    peaks = sorted({c["peak_lr"] for c in runs if c.get("role", "grid") == "grid"})
    return len(peaks) >= 3 and best["peak_lr"] in (peaks[0], peaks[-1])


def groups(results):
    """{(batch size, with LARS): its runs}, sorted by batch size, SGD first."""
    grouped = {}
    for cell in results["cells"]:
        grouped.setdefault((cell["batch_size"], cell["with_lars"]), []).append(cell)
    return dict(sorted(grouped.items()))


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


def reference_cells(results):
    """{(batch size, with LARS): top-1} of the reference sweep, or {} without one."""
    if not results.get("reference"):
        return {}
    try:
        cells = read_results(results["reference"])["cells"]
    except CheckpointError:
        return {}
    return {(c["batch_size"], c["with_lars"]): c["final_top1"] for c in cells if c["status"] in DONE}


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


def _original_row(cell, machines):
    batch = f"{cell['batch_size']} (base line)" if cell["batch_size"] == 128 else str(cell["batch_size"])
    if cell["status"] == "not run":
        return f"| {batch} | | not run | |"
    lr = f"{cell['hyperparams']['LR']:g}"
    return f"| {batch} | {lr} | {_accuracy(cell)} | {_time(cell, machines)} |"


def _accuracy(cell):
    if cell["status"] == "not run":
        return "not run"
    accuracy = format_accuracy(cell["final_top1"]) if cell["final_top1"] is not None else "-"
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
    batch_sizes = sorted({b for b, _ in grouped})
    reference = reference_cells(results)
    lines = ["## Best of grid", "",
             "The best peak LR of each batch size and optimizer is the grid run with the highest final "
             "top-1 that did not diverge; top-1 is the mean ± standard deviation over every seed run "
             "at that LR (n runs), time to train their mean. LARS: peak LR (lr x trust coefficient). "
             "(edge of grid): the best is the grid's smallest or largest LR, so the grid needs extending.", ""]
    header = "| Batch | SGD: peak LR | SGD: top-1 % | SGD: time to train | LARS: peak LR (lr x tc) | LARS: top-1 % | LARS: time to train |"
    if reference:
        header += f" {results['reference']}: SGD | LARS |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for batch in batch_sizes:
        row = f"| {batch} |"
        for with_lars in (False, True):
            best, same_lr = best_of_grid(grouped.get((batch, with_lars), []))
            if best is None:
                row += " | - | |"
                continue
            mean, sd = mean_and_sd([c["final_top1"] for c in same_lr])
            spread = f" ± {sd:.2f} (n={len(same_lr)})" if sd is not None else " (n=1)"
            seconds = statistics.mean(c["time_to_train"] for c in same_lr)
            edge = " (edge of grid)" if at_grid_edge(best, grouped[batch, with_lars]) else ""
            row += f" {_lr_label(best)}{edge} | {mean:.2f}{spread} | {_time(best, machines, seconds)} |"
        if reference:
            row += "".join(f" {format_accuracy(reference[batch, lars]) if (batch, lars) in reference else '-'} |"
                           for lars in (False, True))
        lines.append(row)
    lines += ["", "## Whole grid", "", "| Batch | Optimizer | Peak LR (lr x tc) | Seed | top-1 % | Time to train |",
              "|---|---|---|---|---|---|"]
    for (batch, with_lars), runs in grouped.items():
        for cell in sorted(runs, key=lambda c: (c["peak_lr"], c["seed"])):
            time = _time(cell, machines) if cell["status"] != "not run" else ""
            lines.append(f"| {batch} | {'LARS' if with_lars else 'SGD'} | {_lr_label(cell)} | {cell['seed']} | "
                         f"{_accuracy(cell)} | {time} |")
    targets = " | ".join(f"{t} %" for t in TARGETS)
    lines += ["", "## Steps to target", "",
              "Optimizer steps until the test top-1 first reached each target: the fewest over the grid's "
              "runs at the base seed (the best LR for each target may differ), read at the end of each "
              "epoch; '-': not reached; blank: no run done yet. Perfect scaling halves the steps when the "
              "batch doubles.", "",
              f"| Batch | SGD: {targets} | LARS: {targets} |", "|---|" + "---|" * (2 * len(TARGETS))]
    for batch in batch_sizes:
        row = f"| {batch} |"
        for with_lars in (False, True):
            steps = fewest_steps(grouped.get((batch, with_lars), []))
            row += "".join(f" {steps_cell(steps, t)} |" for t in TARGETS)
        lines.append(row)
    return lines + [""]


def steps_cell(steps, target):
    """A steps-to-target table cell: blank before any run is done, '-' when none reached it."""
    if not steps:
        return ""
    return "-" if steps[target] is None else str(steps[target])


def fewest_steps(runs):
    """{target: the fewest steps any base-seed grid run took to reach it, or None}; {} before
    any of them is done."""
    grid = [c for c in runs if c.get("role", "grid") == "grid" and c["status"] in DONE]
    if not grid:
        return {}
    fewest = {}
    for target in TARGETS:
        steps = [s for s in (steps_to_target(c, target) for c in grid) if s is not None]
        fewest[target] = min(steps, default=None)
    return fewest


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
    for ax, with_lars in zip(axes[0], optimizers):
        for cell in cells_of(with_lars):
            epochs = [row["epoch"] for row in cell["history"]]
            ax.plot(epochs, [row["test_acc"] for row in cell["history"]], ".-", label=f"batch {cell['batch_size']}")
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
    """lr_grid.png: final top-1 against peak LR (LARS: lr x tc), one curve per batch size, SGD
    and LARS panels, diverged runs as crosses at their last accuracy; batch_size.png: best
    top-1 (mean and sd over seeds) against batch size, with the reference sweep's cells;
    steps.png: steps to 50 % and 70 % against batch size, log-log, with the perfect-scaling
    line; accuracy.png: test accuracy per epoch of each cell's best run."""
    plt = _pyplot()
    grouped = groups(results)
    batch_sizes = sorted({b for b, _ in grouped})
    colours = plt.cm.viridis([i / max(1, len(batch_sizes) - 1) for i in range(len(batch_sizes))])

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, with_lars in zip(axes, (False, True)):
        for colour, batch in zip(colours, batch_sizes):
            runs = sorted((c for c in grouped.get((batch, with_lars), [])
                           if c.get("role", "grid") == "grid" and c["status"] in DONE and c.get("final_top1") is not None),
                          key=lambda c: c["peak_lr"])
            x = [lr_x_tc(c) if with_lars else c["peak_lr"] for c in runs]
            ax.plot(x, [c["final_top1"] for c in runs], "-", color=colour, label=f"batch {batch}")
            for xi, c in zip(x, runs):
                ax.plot(xi, c["final_top1"], "x" if c["status"] == "diverged" else "o", color=colour)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("peak LR x trust coefficient" if with_lars else "peak LR")
        ax.set_title(f"{results['preset']}: {'LARS' if with_lars else 'SGD'} (x: diverged)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    axes[0].set_ylabel("final test top-1 accuracy, %")
    _save(fig, os.path.join(results_dir, "lr_grid.png"))

    fig, ax = plt.subplots(figsize=(6, 4.5))
    reference = reference_cells(results)
    for with_lars, name in ((False, "SGD"), (True, "LARS")):
        points = []
        for batch in batch_sizes:
            best, same_lr = best_of_grid(grouped.get((batch, with_lars), []))
            if best is not None:
                mean, sd = mean_and_sd([c["final_top1"] for c in same_lr])
                points.append((batch, mean, sd or 0.0))
        if points:
            ax.errorbar(*zip(*points), fmt="o-", capsize=3, label=f"{name}, best of grid")
        ref = sorted((b, acc) for (b, lars), acc in reference.items() if lars is with_lars and acc is not None)
        if ref:
            ax.plot(*zip(*ref), "s--", alpha=0.6, label=f"{name}, {os.path.basename(results['reference'])}")
    _batch_axis(ax, batch_sizes)
    ax.set_ylabel("final test top-1 accuracy, %")
    ax.set_title(results["preset"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    _save(fig, os.path.join(results_dir, "batch_size.png"))

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for with_lars, name in ((False, "SGD"), (True, "LARS")):
        for target, style in ((50, "o-"), (70, "s-")):
            points = [(b, fewest_steps(grouped.get((b, with_lars), [])).get(target)) for b in batch_sizes]
            points = [(b, s) for b, s in points if s is not None]
            if points:
                line, = ax.plot(*zip(*points), style, label=f"{name}, {target} %")
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
        return [best for (_, lars), best in best_runs.items() if lars is with_lars and best is not None]

    _save(_accuracy_panels(results, cells_of, "best of grid, "), os.path.join(results_dir, "accuracy.png"))


def plot_layer_figures(results_dir, results):
    """layers_<batch>_<sgd|lars>.png: each cell's layer statistics (the best run's, in a grid),
    from the records results.json keeps."""
    for (batch, with_lars), runs in groups(results).items():
        run = best_grid_run(runs) if results.get("grid") else runs[0]
        if run is not None and run.get("layer_stats"):
            name = "lars" if with_lars else "sgd"
            plot_layers(run["layer_stats"], os.path.join(results_dir, f"layers_{batch}_{name}.png"),
                        f"batch {batch}, {name.upper()}")


def _save(fig, path):
    import matplotlib.pyplot as plt

    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
