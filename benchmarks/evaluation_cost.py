"""What each epoch's evaluation costs against its training, side by side in one run.

    python benchmarks/evaluation_cost.py --data_dir=PATH_TO/cifar10 [configs/FILE.py ...] [--name=value ...]
                                         [--rounds=N] [--steps=N]

After every EVAL_EVERY-th epoch and the last, train.py recomputes the BN statistics (PRECISE_BN
micro-batches), then evaluates the validation split (VALIDATION_SIZE images) and the test set.
For the run the settings describe (without config files: the 200-epoch study's, the files of
STUDY), at batch 128 and 8192 unless --batch_size names one, trainer.py's Trainer times in
--rounds interleaved rounds (medians): --steps training steps, scaled to a whole epoch, then each
part of the evaluation, after one untimed round of the same (allocations, and compilation with
--compile=True). Prints seconds per epoch for each, one evaluation's share of an epoch's
training, and the evaluations' share of the whole run's training (NUM_EPOCHS, EVAL_EVERY).
"""

import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from config import ConfigError, load_config  # noqa: E402
from data import subset, training_data  # noqa: E402
from evaluation import test_accuracy  # noqa: E402
from trainer import Trainer  # noqa: E402
from utils import Process, set_threads  # noqa: E402
from cli import run  # noqa: E402  (beside this file)

STUDY = [os.path.join(ROOT, "configs", name) for name in ("cpu_sweep.py", "large_batch.py", "recipe.py", "study200.py")]
BATCH_SIZES = (128, 8192)


def seconds(work):
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def measure(trainer, steps, rounds):
    """Median seconds per epoch of training and of each part of the evaluation."""
    batches = trainer.batches
    parts = {"training epoch": [], "precise BN": [], "validation": [], "test": []}
    for r in range(-1, rounds):  # round -1 is a warm-up (allocations; compilation with COMPILE = True)
        data = list(zip(range(steps), batches.train_epoch(r + 1, trainer.cfg.SEED, trainer.cfg.BATCH_SIZE)))
        trainer.train_network.train()
        parts["training epoch"].append(
            seconds(lambda: [trainer.train_step(x, y) for _, (x, y) in data]) * trainer.steps_per_epoch / steps)
        with torch.no_grad():
            parts["precise BN"].append(seconds(trainer.recompute_bn_statistics) if trainer.cfg.PRECISE_BN else 0.0)
            for name, images in (("validation", batches.validation), ("test", batches.test)):
                parts[name].append(seconds(lambda: test_accuracy(trainer.network, images, trainer.autocast))
                                   if images is not None else 0.0)
    return {name: statistics.median(times[1:]) for name, times in parts.items()}


def positive_int(option):
    """The value of ``--name=N``; ConfigError unless N is a positive integer."""
    name, value = option.split("=", 1)
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{name}={value!r} is not allowed: must be a positive integer")
    return int(value)


def main(argv):
    options = {a.split("=", 1)[0]: positive_int(a) for a in argv if a.startswith(("--rounds=", "--steps="))}
    argv = [a for a in argv if not a.startswith(("--rounds=", "--steps="))]
    rounds, steps = options.get("--rounds", 3), options.get("--steps", 2)
    args = argv if any(not a.startswith("--") for a in argv) else [*STUDY, *argv]
    cfg = load_config(args)
    set_threads(cfg.NUM_THREADS)
    data = training_data(cfg.DATA_DIR, cfg.NUM_WORKERS, cfg.VALIDATION_SIZE)
    batch_sizes = [cfg.BATCH_SIZE] if any(a.startswith("--batch_size=") for a in args) else BATCH_SIZES
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
          f"{len(data['train_labels'])} training, {len(data.get('val_labels', []))} validation, "
          f"{len(data['test_labels'])} test images; PRECISE_BN = {cfg.PRECISE_BN}; median of {rounds} rounds, "
          f"training from {steps} steps scaled to an epoch")
    print(f"| batch | steps/epoch | training epoch, s | precise BN, s | validation, s | test, s | evaluation / epoch | "
          f"evaluations / run ({cfg.NUM_EPOCHS} epochs, EVAL_EVERY = {cfg.EVAL_EVERY}) |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in batch_sizes:
        batch_cfg = load_config([*args, f"--batch_size={batch}", "--layer_stats_every=0"])
        trainer = Trainer(batch_cfg, Process(), torch.device("cpu"), subset(data, batch_cfg.TRAIN_SUBSET))
        t = measure(trainer, min(steps, trainer.steps_per_epoch), rounds)
        evaluation = t["precise BN"] + t["validation"] + t["test"]
        evaluations = sum(trainer.evaluates_after(epoch) for epoch in range(1, batch_cfg.NUM_EPOCHS + 1))
        # Three significant digits, not fixed decimals: a tiny evaluation set takes milliseconds, which
        # two decimals would print as 0.00.
        print(f"| {batch} | {trainer.steps_per_epoch} | {t['training epoch']:.3g} | {t['precise BN']:.3g} | "
              f"{t['validation']:.3g} | {t['test']:.3g} | {evaluation / t['training epoch']:.3f} | "
              f"{evaluation * evaluations / (t['training epoch'] * batch_cfg.NUM_EPOCHS):.3f} |", flush=True)


if __name__ == "__main__":
    run(main, __doc__, sys.argv[1:])
