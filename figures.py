"""A sweep's figures: accuracy per epoch, final top-1 against batch size and against peak LR,
steps to target, and each cell's layer statistics. matplotlib is imported only when a figure is
drawn."""

import os

from choosing import (DONE, best_grid_run, best_of_grid, chosen_on, groups, is_grid_run, lr_x_tc, mean_and_sd, mean_steps,
                      reference_cells, row_label, selection_top1, table_rows, targets)
from diagnostics import plot_layers
from utils import evaluated, write_atomically


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
        _legend(ax)
    _save(fig, os.path.join(results_dir, "batch_size.png"))


def plot_grid(results_dir, results):
    """lr_grid.png: final top-1 against peak LR (LARS: lr x tc), one curve per batch size (and
    recipe), SGD and LARS panels, diverged runs as crosses at their last accuracy; with a
    validation split, validation solid and test dashed with hollow markers;
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
                           if is_grid_run(c) and c["status"] in DONE and c.get("final_top1") is not None),
                          key=lambda c: c["peak_lr"])
            x = [lr_x_tc(c) if with_lars else c["peak_lr"] for c in runs]
            if not runs:
                continue
            ax.plot(x, [selection_top1(c) for c in runs], "-", color=colour, label=row_label(batch, recipe))
            if split == "validation":  # the test set beside what the LR was chosen on
                # hollow markers, so that a cell with a single LR shows its test top-1 too
                ax.plot(x, [c["final_top1"] for c in runs], "o--", color=colour, alpha=0.6, mfc="none")
            for xi, c in zip(x, runs):
                ax.plot(xi, selection_top1(c), "x" if c["status"] == "diverged" else "o", color=colour)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("peak LR x trust coefficient" if with_lars else "peak LR")
        solid = "solid: validation, dashed and hollow: test; " if split == "validation" else ""
        ax.set_title(f"{results['preset']}: {'LARS' if with_lars else 'SGD'}\n({solid}x: diverged)", fontsize=10)
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=8, loc="best")
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
    _legend(ax, fontsize=8, loc="lower left")
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
        _legend(ax, fontsize=8, loc="best")
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


def _legend(ax, **options):
    """The axes' legend, unless nothing on it has a label (a panel whose runs have not finished)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**options)


def _save(fig, path):
    import matplotlib.pyplot as plt

    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)

