"""Show a checkpoint's settings and accuracy history, then evaluate its top-1 accuracy.

    python val.py [configs/FILE.py] [--name=value ...] [--checkpoint=PATH]

Without --checkpoint, the checkpoint that train.py writes for these settings (WITH_LARS,
BATCH_SIZE, CHECKPOINT_DIR) is used. The test data comes from DATA_DIR. Exit status 1 if the
checkpoint is missing or unreadable, 2 for bad settings or data.
"""

import sys
import types

import torch

from config import ConfigError, load_config
from data import DataError, load_cifar10
from train import Trainer
from utils import (EXIT_BAD_INPUT, CheckpointError, Process, checkpoint_path, fail, format_history,
                   format_settings, load_checkpoint, load_model_state, pick_device)

EXIT_NO_CHECKPOINT = 1


def split_checkpoint_arg(argv):
    """(--checkpoint=PATH or None, the other arguments)."""
    paths = [a.split("=", 1)[1] for a in argv if a.startswith("--checkpoint=")]
    return (paths[-1] if paths else None), [a for a in argv if not a.startswith("--checkpoint=")]


def main(argv):
    path, argv = split_checkpoint_arg(argv)
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
