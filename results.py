"""A sweep's results: results.json from the cells' checkpoints, the README's tables as
results.md, and figures. Used by sweep.py and by ``python val.py --results=DIR``."""

import json
import math
import os

from utils import CheckpointError, format_accuracy, format_duration, load_checkpoint


def cell_summary(path, batch_size, with_lars, num_epochs):
    """One cell as plain values; ``status`` is "finished", "diverged", "partial" or "not run"."""
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError:
        return {"batch_size": batch_size, "with_lars": with_lars, "status": "not run", "history": []}
    history = checkpoint["history"]
    finite = [row["test_acc"] for row in history if not math.isnan(row["test_acc"])]
    if checkpoint["diverged"]:
        status = "diverged"
    else:
        status = "finished" if checkpoint["epoch"] >= num_epochs else "partial"
    return {
        "batch_size": batch_size, "with_lars": with_lars, "status": status,
        "epochs_done": checkpoint["epoch"],
        "final_top1": finite[-1] if finite else None,
        "best_top1": max(finite) if finite else None,
        "time_to_train": history[-1]["time"] if history else 0.0,
        "hyperparams": checkpoint["hyperparams"], "history": history,
        "machine": checkpoint.get("machine"),
    }


def write_results(results_dir, results):
    """results.json, results.md and the figures, each replaced atomically."""
    os.makedirs(results_dir, exist_ok=True)
    _write_text(os.path.join(results_dir, "results.json"), json.dumps(results, indent=1) + "\n")
    _write_text(os.path.join(results_dir, "results.md"), markdown(results))
    plot(results_dir, results)


def read_results(results_dir):
    path = os.path.join(results_dir, "results.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"no readable results in {results_dir}: {e}") from None


def markdown(results):
    """The original README's tables: one without LARS, one with; batch 128 is the base line."""
    machines = _machine_labels(results["cells"])
    lines = [f"# {results['preset']}", "", f"Command: `{results['command']}`", ""]
    for with_lars, title in ((False, "Without LARS"), (True, "With LARS")):
        cells = sorted((c for c in results["cells"] if c["with_lars"] is with_lars), key=lambda c: c["batch_size"])
        if not cells:
            continue
        lines += [f"## {title}", "", "| Batch | Base LR | top-1 Accuracy, % | Time to train |",
                  "|---|---|---|---|"]
        for cell in cells:
            lines.append(_table_row(cell, machines))
        lines.append("")
    for machine, label in machines.items():
        m = json.loads(machine)
        lines.append(f"{label}Machine: {m['cpu']}, {m['cores']} cores, device {m['device']} "
                     f"({m['accelerator']}), {m['processes']} process(es), torch {m['torch']}.")
    lines.append("Time to train counts training steps only, not evaluation. (nan): the loss became "
                 "non-finite; the accuracy shown is the last one before.")
    return "\n".join(lines) + "\n"


def _machine_labels(cells):
    """Each machine the cells ran on (as JSON) -> its label: "" for a single machine, else
    "(a) ", "(b) ", ..., which the table puts after each time, as times differ by machine."""
    machines = sorted({_machine_key(c) for c in cells if c.get("machine")})
    if len(machines) == 1:
        return {machines[0]: ""}
    return {m: f"({chr(ord('a') + i)}) " for i, m in enumerate(machines)}


def _machine_key(cell):
    return json.dumps(cell["machine"], sort_keys=True)


def _table_row(cell, machines):
    batch = f"{cell['batch_size']} (base line)" if cell["batch_size"] == 128 else str(cell["batch_size"])
    if cell["status"] == "not run":
        return f"| {batch} | | not run | |"
    lr = f"{cell['hyperparams']['LR']:g}"
    accuracy = format_accuracy(cell["final_top1"]) if cell["final_top1"] is not None else "-"
    if cell["status"] == "diverged":
        accuracy += " (nan)"
    elif cell["status"] == "partial":
        accuracy += f" (epoch {cell['epochs_done']} of {cell['hyperparams']['NUM_EPOCHS']})"
    label = machines[_machine_key(cell)].strip() if cell.get("machine") else ""
    return f"| {batch} | {lr} | {accuracy} | {format_duration(cell['time_to_train'])} {label}".rstrip() + " |"


def plot(results_dir, results):
    """accuracy.png: test accuracy per epoch per batch size, without and with LARS side by side
    (one panel for each optimizer the sweep has);
    batch_size.png: final top-1 against batch size for both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    optimizers = sorted({c["with_lars"] for c in results["cells"]})  # a LARS-only sweep: one panel
    fig, axes = plt.subplots(1, len(optimizers), figsize=(6 * len(optimizers), 4.5), sharey=True, squeeze=False)
    for ax, with_lars in zip(axes[0], optimizers):
        for cell in sorted((c for c in results["cells"] if c["with_lars"] is with_lars and c["history"]),
                           key=lambda c: c["batch_size"]):
            epochs = [row["epoch"] for row in cell["history"]]
            ax.plot(epochs, [row["test_acc"] for row in cell["history"]], label=f"batch {cell['batch_size']}")
        ax.set_title(f"{results['preset']}: {'with' if with_lars else 'without'} LARS")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("test top-1 accuracy, %")
    _save(fig, os.path.join(results_dir, "accuracy.png"))

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for with_lars in (False, True):
        cells = sorted((c for c in results["cells"] if c["with_lars"] is with_lars and c.get("final_top1") is not None),
                       key=lambda c: c["batch_size"])
        if cells:
            ax.plot([c["batch_size"] for c in cells], [c["final_top1"] for c in cells], "o-",
                    label="LARS" if with_lars else "SGD")
    ax.set_xscale("log", base=2)
    batch_sizes = sorted({c["batch_size"] for c in results["cells"]})
    ax.set_xticks(batch_sizes, labels=[str(b) for b in batch_sizes])
    ax.minorticks_off()
    ax.set_xlabel("batch size")
    ax.set_ylabel("final test top-1 accuracy, %")
    ax.set_title(results["preset"])
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    _save(fig, os.path.join(results_dir, "batch_size.png"))


def _save(fig, path):
    import matplotlib.pyplot as plt

    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def _write_text(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
