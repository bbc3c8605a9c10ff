"""Show a checkpoint's settings and accuracy history, then evaluate its top-1 accuracy.

    python val.py [configs/FILE.py] [--name=value ...] [--checkpoint=PATH]
    python val.py --results=results/PRESET

Without --checkpoint, the checkpoint that train.py writes for these settings (WITH_LARS,
BATCH_SIZE, CHECKPOINT_DIR) is used. The test data comes from DATA_DIR. --results prints the
tables of a sweep's results folder instead. Exit status 1 if the checkpoint or results are
missing or unreadable, 2 for bad settings or data.
"""

import sys
import types

import torch

from config import ConfigError, load_config
from data import DataError, load_cifar10
from results import markdown, read_results
from train import Trainer
from utils import (EXIT_BAD_INPUT, CheckpointError, Process, checkpoint_path, fail, format_history,
                   format_settings, load_checkpoint, load_model_state, pick_device)

EXIT_NO_CHECKPOINT = 1


def split_arg(argv, name):
    """(the value of the last --name=VALUE or None, the other arguments)."""
    prefix = f"--{name}="
    values = [a[len(prefix):] for a in argv if a.startswith(prefix)]
    return (values[-1] if values else None), [a for a in argv if not a.startswith(prefix)]


def main(argv):
    results_dir, argv = split_arg(argv, "results")
    if results_dir is not None:
        try:
            print(markdown(read_results(results_dir)), end="")
        except CheckpointError as e:
            fail(e, EXIT_NO_CHECKPOINT)
        return
    path, argv = split_arg(argv, "checkpoint")
    try:
        cfg = load_config(argv)
        device = pick_device(cfg.DEVICE, Process())
    except (ConfigError, ValueError) as e:
        fail(e, EXIT_BAD_INPUT)
    path = path or checkpoint_path(cfg)
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as e:
        fail(e, EXIT_NO_CHECKPOINT)
    saved = types.SimpleNamespace(**checkpoint["hyperparams"])
    print(f"checkpoint: {path}\nsettings:\n{format_settings(checkpoint['hyperparams'])}\n")
    print(format_history(checkpoint["history"]))
    if checkpoint["diverged"]:
        print("(nan): the run diverged; the weights are from the last finite epoch")
    try:
        data = load_cifar10(cfg.DATA_DIR, cfg.NUM_WORKERS)
    except DataError as e:
        fail(e, EXIT_BAD_INPUT)
    # The model is rebuilt as it was trained; only where it runs and reads data comes from here.
    run = types.SimpleNamespace(**{**vars(saved), "DEVICE": cfg.DEVICE, "DATA_DIR": cfg.DATA_DIR,
                                   "COMPILE": False, "PRECISE_BN": 0})
    trainer = Trainer(run, Process(), device, data)
    try:
        load_model_state(trainer.model, checkpoint["model"], path)
    except CheckpointError as e:
        fail(e, EXIT_NO_CHECKPOINT)
    print(f"top-1 accuracy: {trainer.evaluate():.2f}%")


if __name__ == "__main__":
    main(sys.argv[1:])
