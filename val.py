"""Show a checkpoint's settings and accuracy history, then evaluate its top-1 accuracy.

    python val.py [configs/FILE.py] [--name=value ...] [--checkpoint=PATH] [--layers]
    python val.py --results=results/PRESET

Without --checkpoint, the checkpoint that train.py writes for these settings (WITH_LARS,
BATCH_SIZE, CHECKPOINT_DIR) is used. The test data comes from DATA_DIR, or, when DATA_DIR is
left at its default, from where the checkpoint's run read it. --results prints the tables of a
sweep's results folder instead. --layers adds the run's layer statistics: a table per recorded
epoch, and the figure CHECKPOINT-layers.png beside the checkpoint. A run that held out a
validation split (VALIDATION_SIZE) is evaluated on it too, before the test set. Exit status 1
if the checkpoint or results are missing or unreadable, 2 for bad settings or data.
"""

import sys

from config import start_command

if __name__ == "__main__":  # help, and quiet signals, before torch is imported
    start_command(__doc__, sys.argv[1:])

import os
import shlex

import torch

import hyperparams
from checkpoints import CheckpointError, NoCheckpointError, checkpoint_path, load_checkpoint, load_model_state
from choosing import ResultsError, read_results
from config import ConfigError, exit_with_help_if_asked, format_settings, imports_done, load_config
from data import DataError, TestSet, channel_stats, hold_out_validation, load_cifar10
from diagnostics import format_tables, plot_layers
from estimate import CPU_PRESETS, fits_the_cpu
from evaluation import autocast, test_accuracy
from models import build_model
from results import markdown
from utils import (EXIT_BAD_INPUT, DeviceError, Process, fail, format_history, pick_device,
                   set_threads)

EXIT_NO_CHECKPOINT = 1


def split_arg(argv, name):
    """(the value of the last --name=VALUE or None, the other arguments)."""
    prefix = f"--{name}="
    values = [a[len(prefix):] for a in argv if a.startswith(prefix)]
    return (values[-1] if values else None), [a for a in argv if not a.startswith(prefix)]


def evaluate_checkpoint(checkpoint, path, data, device):
    """{"validation": top-1 % on its run's validation hold-out (when it had one), "test": top-1 %
    on the test set}: the checkpoint's model, rebuilt as it was trained, evaluated with the
    normalisation it was trained with."""
    saved = checkpoint["hyperparams"]
    model = build_model(saved["MODEL"])
    load_model_state(model, checkpoint["model"], path)
    memory_format = torch.channels_last if saved["CHANNELS_LAST"] else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    if "normalisation" in checkpoint:
        mean, std = checkpoint["normalisation"]["mean"], checkpoint["normalisation"]["std"]
    else:  # written before checkpoints recorded it
        mean, std = channel_stats(data["train_images"])
    splits = {"test": (data["test_images"], data["test_labels"])}
    if saved.get("VALIDATION_SIZE", 0):  # the same images its run held out: they depend on the labels alone
        held_out = hold_out_validation(data, saved["VALIDATION_SIZE"])
        splits = {"validation": (held_out["val_images"], held_out["val_labels"]), **splits}
    return {split: test_accuracy(model, TestSet(images, labels, mean, std, device, saved["CHANNELS_LAST"]),
                                 lambda: autocast(device, saved["AMP"]))
            for split, (images, labels) in splits.items()}


def show_layers(checkpoint, path):
    records = checkpoint.get("layer_stats")
    print("\n" + format_tables(records, checkpoint.get("steps_per_epoch")))
    if records and records["steps"]:
        figure = os.path.splitext(path)[0] + "-layers.png"
        saved = checkpoint["hyperparams"]
        plot_layers(records, figure, f"batch {saved['BATCH_SIZE']}, {'LARS' if saved['WITH_LARS'] else 'SGD'}")
        print(f"figure: {figure}")


def no_checkpoint_hint(cfg, argv, device):
    """What to do when these settings name no checkpoint: the ones CHECKPOINT_DIR has, or the
    command that trains one; on a CPU that these settings' run would keep for days, a CPU preset's."""
    directory = cfg.CHECKPOINT_DIR
    found = sorted(f for f in os.listdir(directory) if f.endswith(".pth")) if os.path.isdir(directory) else []
    if found:
        return (f"; {directory} has {', '.join(found)} (choose one with --checkpoint=PATH, or with the "
                f"--batch_size and --with_lars it was trained with)")
    if device.type == "cpu" and not fits_the_cpu(cfg):
        preset = CPU_PRESETS["train"]
        return (f"; train one that fits this CPU with: python train.py {preset}, then: python val.py {preset} "
                f"(these settings' run, {shlex.join(['python', 'train.py', *argv])}, is sized for a GPU)")
    return f"; train one with: {shlex.join(['python', 'train.py', *argv])}"


def main(argv):
    imports_done()
    exit_with_help_if_asked(__doc__, argv)
    results_dir, argv = split_arg(argv, "results")
    if results_dir is not None:
        try:
            print(markdown(read_results(results_dir)), end="")
        except ResultsError as e:
            fail(e, EXIT_NO_CHECKPOINT)
        return
    path, argv = split_arg(argv, "checkpoint")
    layers = "--layers" in argv
    argv = [a for a in argv if a != "--layers"]
    for arg in argv:
        if os.path.isfile(os.path.join(arg, "results.json")):
            fail(f"{arg} is a sweep's results folder: show it with python val.py --results={arg}", EXIT_BAD_INPUT)
    try:
        cfg = load_config(argv)
        device = pick_device(cfg.DEVICE, Process())
    except (ConfigError, DeviceError) as e:
        fail(e, EXIT_BAD_INPUT)
    chosen = path or checkpoint_path(cfg)
    try:
        checkpoint = load_checkpoint(chosen)
    except NoCheckpointError as e:
        fail(f"{e}{'' if path else no_checkpoint_hint(cfg, argv, device)}", EXIT_NO_CHECKPOINT)
    except CheckpointError as e:
        fail(e, EXIT_NO_CHECKPOINT)
    path = chosen
    print(f"checkpoint: {path}\nsettings:\n{format_settings(checkpoint['hyperparams'])}\n")
    print(format_history(checkpoint["history"]))
    if checkpoint["diverged"]:
        print("(nan): the run diverged; the weights are from the last finite epoch")
    if layers:
        show_layers(checkpoint, path)
    data_dir = cfg.DATA_DIR
    if data_dir == os.path.expanduser(hyperparams.DATA_DIR):
        data_dir = checkpoint["hyperparams"].get("DATA_DIR", data_dir)
    set_threads(cfg.NUM_THREADS)
    try:
        data = load_cifar10(data_dir, cfg.NUM_WORKERS, statistics=False)
        accuracies = evaluate_checkpoint(checkpoint, path, data, device)
    except DataError as e:
        fail(e, EXIT_BAD_INPUT)
    except CheckpointError as e:
        fail(e, EXIT_NO_CHECKPOINT)
    if "validation" in accuracies:
        print(f"validation top-1 accuracy: {accuracies['validation']:.2f}% "
              f"({checkpoint['hyperparams']['VALIDATION_SIZE']} training images held out)")
    print(f"top-1 accuracy: {accuracies['test']:.2f}%")


if __name__ == "__main__":
    main(sys.argv[1:])
