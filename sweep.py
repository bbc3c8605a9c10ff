"""Run every (batch size, LARS on/off) cell of a preset and write its tables and figures.

    python sweep.py [configs/FILE.py] [--name=value ...]

Each cell is a normal `python train.py` run (the same arguments plus --batch_size and
--with_lars) with its own checkpoint in CHECKPOINT_DIR/<preset>/. The sweep is resumable: a
finished or diverged cell is not run again (also when only the committed results.json records
it, with the same settings), an interrupted one resumes from its checkpoint.
After every cell, RESULTS_DIR/<preset>/ gets results.json, results.md and the figures.
Exit status: 0 when every cell has finished or diverged, 1 if a cell failed otherwise, 2 for
bad settings.
"""

import os
import shlex
import subprocess
import sys

from config import ConfigError, constants, load_config, validate
from models import MODELS
from results import cell_summary, read_results, write_results
from train import OPERATIONAL_SETTINGS
from utils import EXIT_BAD_INPUT, EXIT_DIVERGED, CheckpointError, checkpoint_path, fail

ROOT = os.path.dirname(os.path.abspath(__file__))


def preset_name(argv):
    files = [a for a in argv if not a.startswith("--")]
    return os.path.splitext(os.path.basename(files[-1]))[0] if files else "default"


def validate_sweep(cfg):
    """The cell lists: each cell is checked as a train.py run, but an empty or repeated list
    would pass that silently."""
    for name in ("SWEEP_BATCH_SIZES", "SWEEP_WITH_LARS"):
        values = getattr(cfg, name)
        if not values or len(set(values)) != len(values):
            raise ConfigError(f"{name} = {values!r} is not allowed: must be a non-empty list without repeats")


def cells(argv, cfg, preset):
    """(batch size, with LARS, train.py arguments, resolved settings) for every cell."""
    checkpoint_dir = os.path.join(cfg.CHECKPOINT_DIR, preset)
    for batch_size in cfg.SWEEP_BATCH_SIZES:
        for with_lars in cfg.SWEEP_WITH_LARS:
            args = [*argv, f"--batch_size={batch_size}", f"--with_lars={with_lars}",
                    f"--checkpoint_dir={checkpoint_dir}"]
            cell_cfg = load_config(args)
            validate(cell_cfg, 1, tuple(MODELS))
            yield batch_size, with_lars, args, cell_cfg


def run_cell(args, status):
    """Train one cell (resuming a partial one); True unless train.py failed for another reason
    than divergence."""
    command = [sys.executable, os.path.join(ROOT, "train.py"), *args]
    if status == "partial":
        command.append("--resume=True")
    print(f"\n$ {shlex.join(command)}", flush=True)
    return subprocess.run(command).returncode in (0, EXIT_DIVERGED)


def summarise(plan, results_dir):
    """Every cell's summary: from its checkpoint, or, for a cell that finished or diverged on
    another machine, from the committed results.json if its settings are the same."""
    try:
        recorded = read_results(results_dir)["cells"]
    except CheckpointError:
        recorded = []
    done = {(c["batch_size"], c["with_lars"]): c for c in recorded if c["status"] in ("finished", "diverged")}
    summaries = []
    for batch_size, with_lars, _, cell_cfg in plan:
        summary = cell_summary(checkpoint_path(cell_cfg), batch_size, with_lars, cell_cfg.NUM_EPOCHS)
        earlier = done.get((batch_size, with_lars))
        if summary["status"] == "not run" and earlier and _same_run(earlier["hyperparams"], constants(cell_cfg)):
            summary = earlier
        summaries.append(summary)
    return summaries


def _same_run(saved, settings):
    return all(saved.get(k) == v for k, v in settings.items() if k not in OPERATIONAL_SETTINGS)


def main(argv):
    preset = preset_name(argv)
    try:
        cfg = load_config(argv)
        validate_sweep(cfg)
        plan = list(cells(argv, cfg, preset))
    except ConfigError as e:
        fail(e, EXIT_BAD_INPUT)
    results_dir = os.path.join(cfg.RESULTS_DIR, preset)
    header = {"preset": preset, "command": shlex.join(["python", "sweep.py", *argv])}
    all_ok = True
    for (batch_size, with_lars, args, _), summary in zip(plan, summarise(plan, results_dir)):
        if summary["status"] in ("finished", "diverged"):
            print(f"{preset}: batch {batch_size}, LARS {with_lars}: {summary['status']}, skipped")
            continue
        all_ok &= run_cell(args, summary["status"])
        write_results(results_dir, {**header, "cells": summarise(plan, results_dir)})
    write_results(results_dir, {**header, "cells": summarise(plan, results_dir)})
    print(f"\n{preset}: results in {results_dir}/")
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
