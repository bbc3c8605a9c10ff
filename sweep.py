"""Run every run of a preset, (batch size, LARS on/off) cells and optionally an LR grid and
extra seeds in each, and write its tables and figures.

    python sweep.py [configs/FILE.py] [--name=value ...]

Each run is a normal `python train.py` run (the same arguments plus --batch_size, --with_lars,
and for a grid --lr and --seed) with its own checkpoint under CHECKPOINT_DIR/<preset>/.

- SWEEP_BATCH_SIZES x SWEEP_WITH_LARS are the cells; each is resolved as a train.py run, so a
  preset can set anything, SWEEP_PEAK_LRS included, per cell from BATCH_SIZE and WITH_LARS.
- SWEEP_PEAK_LRS = [...] makes each cell a grid: one run per peak LR (the LR after warm-up;
  the run's LR is peak / WARMUP_MULTIPLIER). None: one run with the LR as set.
- SWEEP_EXTRA_SEEDS = [...]: when a cell's grid is done, its best peak LR (highest final top-1
  of the runs that did not diverge, on the validation split when VALIDATION_SIZE holds one out)
  runs again with each of these seeds, unless the best is the smallest or largest LR of a grid
  of 3 or more: then the grid needs extending first.
- Runs go cell by cell in the order of SWEEP_BATCH_SIZES, SWEEP_WITH_LARS and the grid. With
  SWEEP_BREADTH_FIRST = True every cell's first peak LR runs first, then every cell's second,
  and so on, then the extra seeds: the answer takes shape before the neighbours of the grid run.
- SWEEP_RECIPES = ["name", ...] makes each cell one per recipe variant: the cell is resolved
  again with RECIPE = "name", which the preset reads to change the settings, and its runs go to
  CHECKPOINT_DIR/<preset>/<name>/. results.md then ranks the recipes of each batch size and
  optimizer (the "Recipe choice" table).

Resumable: a finished or diverged run is not run again (also when only the committed
results.json records it, with the same settings), an interrupted one resumes from its
checkpoint. After every run, RESULTS_DIR/<preset>/ gets results.json, results.md and figures.
Before the first run it prints its plan (the runs recorded, the runs to train in order, the
command that continues). Exit status: 0 when every run has finished or diverged, 1 if a run
failed otherwise, 2 for bad settings, a sweep already running on RESULTS_DIR/<preset>/, or a run
that train.py refused for bad input (the sweep stops there), 130 after Ctrl-C, 143 after SIGTERM.
"""

import sys

from config import start_command

if __name__ == "__main__":  # help, and quiet signals, before torch is imported
    start_command(__doc__, sys.argv[1:])

import os
import re
import shlex
import signal
import subprocess
from dataclasses import dataclass

from checkpoints import InUseError, checkpoint_path, hold_lock
from choosing import DONE, ResultsError, at_grid_edge, best_grid_run, cell_summary, read_results
from config import ConfigError, constants, exit_with_help_if_asked, load_config, peak_lr, run_differences, validate
from estimate import run_seconds, seconds_per_image, too_long_warning
from models import MODELS
from results import write_results
from utils import (EXIT_BAD_INPUT, EXIT_DIVERGED, DeviceError, Process, Terminated, fail, handle_interrupts,
                   interrupt_exit_status, interrupt_name, pick_device, plural)

ROOT = os.path.dirname(os.path.abspath(__file__))
RECIPE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
SWEEP_LOCK = ".sweep.lock"  # RESULTS_DIR/.<preset>.sweep.lock, held while a sweep runs (git-ignored)


@dataclass
class Run:
    """One train.py run of a sweep."""
    batch_size: int
    with_lars: bool
    role: str  # "grid" (one of the cell's peak LRs, or the cell's only run) or "seed" (an extra seed of the best)
    args: list
    cfg: object
    rank: tuple = ()  # (role, position in the cell's grid or seeds, cell): the breadth-first order

    @property
    def summary_fields(self):
        return {"batch_size": self.batch_size, "with_lars": self.with_lars, "recipe": self.cfg.RECIPE,
                "role": self.role, "peak_lr": peak_lr(self.cfg), "trust_coef": self.cfg.TRUST_COEF,
                "seed": self.cfg.SEED}


def preset_name(argv):
    files = [a for a in argv if not a.startswith("--")]
    return os.path.splitext(os.path.basename(files[-1]))[0] if files else "default"


def validate_sweep(cfg):
    """The cell lists: each cell is checked as a train.py run, but an empty or repeated list
    would pass that silently."""
    for name in ("SWEEP_BATCH_SIZES", "SWEEP_WITH_LARS", "SWEEP_TARGETS"):
        _require_unique_list(name, getattr(cfg, name))
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t <= 100 for t in cfg.SWEEP_TARGETS):
        raise ConfigError(f"SWEEP_TARGETS = {cfg.SWEEP_TARGETS!r} is not allowed: must be percentages in (0, 100]")


def _require_unique_list(name, values, allow_empty=False):
    if not isinstance(values, list) or (not values and not allow_empty) or len(set(values)) != len(values):
        raise ConfigError(f"{name} = {values!r} is not allowed: must be a non-empty list without repeats")


def _validate_cell(cfg):
    validate(cfg, 1, tuple(MODELS))
    if cfg.SWEEP_PEAK_LRS is not None:
        _require_unique_list("SWEEP_PEAK_LRS", cfg.SWEEP_PEAK_LRS)
        if not all(isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0 for lr in cfg.SWEEP_PEAK_LRS):
            raise ConfigError(f"SWEEP_PEAK_LRS = {cfg.SWEEP_PEAK_LRS!r} is not allowed: must be positive numbers")
    _require_unique_list("SWEEP_EXTRA_SEEDS", cfg.SWEEP_EXTRA_SEEDS, allow_empty=True)
    if cfg.SEED in cfg.SWEEP_EXTRA_SEEDS or not all(type(s) is int for s in cfg.SWEEP_EXTRA_SEEDS):
        raise ConfigError(f"SWEEP_EXTRA_SEEDS = {cfg.SWEEP_EXTRA_SEEDS!r} is not allowed: must be integers "
                          f"other than SEED ({cfg.SEED})")


def _validate_recipes(cfg):
    recipes = cfg.SWEEP_RECIPES
    if recipes is None:
        return
    _require_unique_list("SWEEP_RECIPES", recipes)
    if not all(isinstance(r, str) and RECIPE_NAME.fullmatch(r) for r in recipes):
        raise ConfigError(f"SWEEP_RECIPES = {recipes!r} is not allowed: must be names of letters, digits, "
                          f"'_', '-' and '.' (each names a checkpoint folder)")


def cells(argv, cfg, preset):
    """(batch size, with LARS, cell arguments, resolved cell settings) for every cell, checked:
    one per batch size and optimizer, and per recipe where the cell's SWEEP_RECIPES names some
    (the cell's arguments then set RECIPE, which the preset reads)."""
    for batch_size in cfg.SWEEP_BATCH_SIZES:
        for with_lars in cfg.SWEEP_WITH_LARS:
            args = [*argv, f"--batch_size={batch_size}", f"--with_lars={with_lars}"]
            cell_cfg = load_config(args)
            _validate_recipes(cell_cfg)
            for recipe_args in ([[f"--recipe={r}"] for r in cell_cfg.SWEEP_RECIPES]
                                if cell_cfg.SWEEP_RECIPES is not None else [[]]):
                recipe_cfg = load_config([*args, *recipe_args]) if recipe_args else cell_cfg
                _validate_cell(recipe_cfg)
                yield batch_size, with_lars, [*args, *recipe_args], recipe_cfg


def make_run(cell, preset, role, peak=None, seed=None):
    """The run of ``cell`` at peak LR ``peak`` (None: the cell's LR) with ``seed`` (None: SEED).
    A cell without a grid keeps the checkpoint directory CHECKPOINT_DIR/<preset>/[<recipe>/]."""
    batch_size, with_lars, args, cell_cfg = cell
    extra, folder = [], ""
    if peak is not None:
        extra.append(f"--lr={peak / cell_cfg.WARMUP_MULTIPLIER!r}")
        folder = f"lr{peak:g}"
    if seed is not None:
        extra.append(f"--seed={seed}")
        folder += f"-seed{seed}"
    checkpoint_dir = os.path.join(cell_cfg.CHECKPOINT_DIR, preset, cell_cfg.RECIPE, folder)
    run_args = [*args, *extra, f"--checkpoint_dir={checkpoint_dir.rstrip(os.sep)}"]
    cfg = load_config(run_args)
    if peak is not None and abs(peak_lr(cfg) - peak) > 1e-9 * peak:
        raise ConfigError(f"SWEEP_PEAK_LRS: the run for peak LR {peak:g} resolves to {peak_lr(cfg):g}; "
                          f"WARMUP_MULTIPLIER must not depend on LR in a grid")
    validate(cfg, 1, tuple(MODELS))
    return Run(batch_size, with_lars, role, run_args, cfg)


def grid_runs(cell, preset):
    peaks = cell[3].SWEEP_PEAK_LRS
    if peaks is None:
        return [make_run(cell, preset, "grid")]
    return [make_run(cell, preset, "grid", peak) for peak in peaks]


def seed_runs(cell, preset, best):
    return [make_run(cell, preset, "seed", best["peak_lr"] if cell[3].SWEEP_PEAK_LRS else None, seed)
            for seed in cell[3].SWEEP_EXTRA_SEEDS]


def plan(cell_list, preset, recorded):
    """Every run known so far with its summary: each cell's grid, then, once the grid is done,
    the extra seeds of its best peak LR."""
    runs, summaries = [], []
    for index, cell in enumerate(cell_list):
        grid = grid_runs(cell, preset)
        grid_summaries = [summarise(run, recorded) for run in grid]
        runs += ranked(grid, 0, index)
        summaries += grid_summaries
        best = best_grid_run(grid_summaries)
        done = all(s["status"] in DONE for s in grid_summaries)
        if done and best is not None and not at_grid_edge(best, grid_summaries):
            seeds = seed_runs(cell, preset, best)
            runs += ranked(seeds, 1, index)
            summaries += [summarise(run, recorded) for run in seeds]
    return runs, summaries


def ranked(runs, role_order, cell_index):
    for position, run in enumerate(runs):
        run.rank = (role_order, position, cell_index)
    return runs


def next_run(pending, breadth_first):
    """The (run, summary) to train next: the first in plan order, or with SWEEP_BREADTH_FIRST
    the earliest of its grid (then of its seeds) across the cells."""
    return min(pending, key=lambda item: item[0].rank) if breadth_first else pending[0]


def summarise(run, recorded):
    """A run's summary: from its checkpoint, or, for a run that finished or diverged on another
    machine, from the committed results.json if its settings are the same."""
    summary = {**run.summary_fields, **cell_summary(checkpoint_path(run.cfg), run.cfg.NUM_EPOCHS)}
    if summary["status"] == "not run":
        settings = constants(run.cfg)
        for earlier in recorded:
            if not run_differences(earlier["hyperparams"], settings):
                return {**earlier, **run.summary_fields}
    return summary


def unplanned_records(recorded, summaries):
    """The recorded runs that no run of the plan stands for (yet): an extra seed of a grid that
    has grown, or of an LR that is no longer its grid's best. results.json keeps them, as
    nothing that was trained is dropped; the tables read every run by its settings."""
    planned = [s["hyperparams"] for s in summaries if s.get("hyperparams")]
    return [c for c in recorded if all(run_differences(c["hyperparams"], p) for p in planned)]


def recorded_runs(results_dir):
    try:
        cells = read_results(results_dir)["cells"]
    except ResultsError:
        return []
    return [c for c in cells if c["status"] in DONE and c.get("hyperparams")]


def run_cell(args, status):
    """Train one run (resuming a partial one); train.py's exit status."""
    command = [sys.executable, os.path.join(ROOT, "train.py"), *args]
    if status == "partial":
        command.append("--resume=True")
    print(f"\n$ {shlex.join(command)}", flush=True)
    process = subprocess.Popen(command)
    try:
        return process.wait()
    except KeyboardInterrupt as stop:
        stop_child(process, signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)
        raise


def stop_child(process, passed_on):
    """After Ctrl-C: a terminal sends it to train.py too, which saves nothing more and reports;
    a SIGINT or SIGTERM sent to the sweep alone is passed on (``passed_on``). train.py's
    checkpoints are atomic, so even the last resort, a kill, loses at most the epoch in progress."""
    for signal_to_send in (None, passed_on, signal.SIGKILL):
        if signal_to_send is not None:
            process.send_signal(signal_to_send)
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def describe(run):
    text = f"batch {run.batch_size}, {'LARS' if run.with_lars else 'SGD'}" + (f", recipe {run.cfg.RECIPE}" if run.cfg.RECIPE else "")
    if run.cfg.SWEEP_PEAK_LRS is not None:
        text += f", peak LR {peak_lr(run.cfg):g}"
    return text + f", seed {run.cfg.SEED}"


def in_order(pending, breadth_first):
    """The pending (run, summary) pairs in the order the sweep will train them."""
    return sorted(pending, key=lambda item: item[0].rank) if breadth_first else list(pending)


def print_plan(preset, runs, summaries, cfg, command):
    """Before the first run: what is recorded (skipped), what will train and in which order, the
    model and epochs, how long on this CPU, and how to continue."""
    for run, summary in zip(runs, summaries):
        if summary["status"] in DONE:
            print(f"{preset}: {describe(run)}: {summary['status']}, skipped")
    pending = in_order([(r, s) for r, s in zip(runs, summaries) if s["status"] not in DONE], cfg.SWEEP_BREADTH_FIRST)
    models = sorted({run.cfg.MODEL for run, _ in pending} or {cfg.MODEL})
    epochs = sorted({run.cfg.NUM_EPOCHS for run, _ in pending} or {cfg.NUM_EPOCHS})
    print(f"{preset}: {plural(len(pending), 'run')} to train ({', '.join(models)}, "
          f"{'-'.join(map(str, epochs[::len(epochs) - 1 or 1]))} epochs each), in this order:")
    for number, (run, summary) in enumerate(pending, 1):
        progress = f" (resumes at epoch {summary['epochs_done']})" if summary["status"] == "partial" else ""
        print(f"  {number:3d}. {describe(run)}, {run.cfg.NUM_EPOCHS} epochs{progress}")
    if any(run.cfg.SWEEP_EXTRA_SEEDS for run, _ in pending):
        print(f"{preset}: then, as each grid finishes with its best LR inside it, that LR again with its "
              f"preset's extra seeds (SWEEP_EXTRA_SEEDS)")
    print(f"{preset}: stop it at any time (Ctrl-C); the same command continues: {command}", flush=True)
    return pending


def warn_if_too_long(pending):
    """On the CPU: a warning before the first run if the listed runs together need more time than
    a CPU should be given (each model measured once)."""
    per_image, total = {}, 0.0
    for run, summary in pending:
        key = (run.cfg.MODEL, run.cfg.AMP, run.cfg.CHANNELS_LAST)
        if key not in per_image:
            per_image[key] = seconds_per_image(run.cfg)
        total += run_seconds(run.cfg, run.cfg.NUM_EPOCHS - summary.get("epochs_done", 0), per_image[key])
    warning = too_long_warning(total, f"this sweep ({plural(len(pending), 'run')})", "sweep")
    if warning:
        print(warning, file=sys.stderr, flush=True)


def main(argv):
    exit_with_help_if_asked(__doc__, argv)
    handle_interrupts()
    preset = preset_name(argv)
    command = shlex.join(["python", "sweep.py", *argv])
    training = []  # the run in progress, for the message of an interrupt
    try:
        sys.exit(sweep(argv, preset, command, training))
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM, wherever it lands
        where = (f"{describe(training[0])}; its checkpoint keeps every finished epoch" if training else
                 "between runs; every run's checkpoint and results.json are whole")
        print(f"\n{interrupt_name(stop)}: {preset}, {where}. Continue with: {command}", file=sys.stderr)
        sys.exit(interrupt_exit_status(stop))


def sweep(argv, preset, command, training):
    """Plan the sweep, print the plan, then train every pending run; the exit status."""
    try:
        cfg = load_config(argv)
        validate_sweep(cfg)
        cell_list = list(cells(argv, cfg, preset))
        results_dir = os.path.join(cfg.RESULTS_DIR, preset)
        recorded = recorded_runs(results_dir)
        runs, summaries = plan(cell_list, preset, recorded)
        device = pick_device(cfg.DEVICE, Process())
    except (ConfigError, DeviceError) as e:
        fail(e, EXIT_BAD_INPUT)
    header = {"preset": preset, "command": command,
              "grid": any(cell[3].SWEEP_PEAK_LRS is not None for cell in cell_list),
              "reference": cfg.SWEEP_REFERENCE, "targets": cfg.SWEEP_TARGETS}
    pending = print_plan(preset, runs, summaries, cfg, command)
    if pending and device.type == "cpu":
        warn_if_too_long(pending)
    try:
        lock = hold_lock(sweep_lock_path(cfg.RESULTS_DIR, preset), f"the sweep {results_dir}")
    except InUseError as e:
        fail(e, EXIT_BAD_INPUT)
    status = run_all(cell_list, preset, recorded, runs, summaries, cfg, header, results_dir, training)
    lock.close()
    return status


def sweep_lock_path(results_root, preset):
    """Beside the preset's results folder, not in it: a sweep that records nothing leaves no folder."""
    return os.path.join(results_root, f".{preset}{SWEEP_LOCK}")


def run_all(cell_list, preset, recorded, runs, summaries, cfg, header, results_dir, training):
    """Train every pending run, re-planning after each and writing the results once a run has
    trained; the sweep's exit status. A run refused for bad input (exit status 2: a setting, the
    data, a lock) stops the sweep at once: every later run would be refused the same way.
    ``training`` holds the run in progress while it trains."""
    failed = set()
    while True:
        pending = [(run, summary) for run, summary in zip(runs, summaries)
                   if summary["status"] not in DONE and tuple(run.args) not in failed]
        if not pending:
            break
        run, summary = next_run(pending, cfg.SWEEP_BREADTH_FIRST)
        training.append(run)
        status = run_cell(run.args, summary["status"])
        training.clear()
        if status == EXIT_BAD_INPUT:
            print(f"{preset}: stopped at {describe(run)}: train.py refused it (above); nothing more was run",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        if status not in (0, EXIT_DIVERGED):
            failed.add(tuple(run.args))
        runs, summaries = plan(cell_list, preset, recorded)
        write_if_trained(results_dir, header, summaries, recorded)
    if write_if_trained(results_dir, header, summaries, recorded):
        print(f"\n{preset}: results in {results_dir}/")
    return 1 if failed else 0


def write_if_trained(results_dir, header, summaries, recorded):
    """Write results.json, results.md and the figures if any run has trained; whether it did."""
    cells = summaries + unplanned_records(recorded, summaries)
    if not any(c["status"] in (*DONE, "partial") for c in cells):
        return False
    write_results(results_dir, {**header, "cells": cells})
    return True


if __name__ == "__main__":
    main(sys.argv[1:])
