"""Train a CIFAR-10 ResNet with SGD or LARS, as hyperparams.py says.

    python train.py [configs/FILE.py] [--name=value ...]
    torchrun --nproc_per_node=N train.py [configs/FILE.py] [--name=value ...]

Exit status: 0 done, 2 bad input (nothing written), 3 diverged (checkpoint records it),
130 interrupted by Ctrl-C, 143 by SIGTERM (the checkpoint keeps the last finished epoch; the
message says how to continue).
"""

import sys

from config import start_command

if __name__ == "__main__":  # help, and quiet signals, before torch is imported
    start_command(__doc__, sys.argv[1:])

import os
import shlex

import torch
import torch.distributed as dist
from tqdm import tqdm

from checkpoints import (CheckpointError, InUseError, NoCheckpointError, checkpoint_path, hold_lock,
                         load_checkpoint, lock_path, refuse_if_locked, save_checkpoint, writable_dir_problem)
from config import (ConfigError, constants, exit_with_help_if_asked, format_settings, load_config, run_differences,
                    validate)
from data import DataError, training_data
from estimate import run_seconds, too_long_warning
from models import MODELS
from trainer import Trainer, refuse_cuda_graphs_off_cuda
from utils import (EXIT_BAD_INPUT, EXIT_DIVERGED, DeviceError, evaluated, fail, handle_interrupts,
                   init_distributed, interrupt_exit_status, interrupt_name, pick_device, plural, process_from_env,
                   set_threads)


def check_inputs(cfg, process):
    """Everything that can be checked before anything is written; raises ConfigError."""
    validate(cfg, process.world_size, tuple(MODELS))
    problem = writable_dir_problem(cfg.CHECKPOINT_DIR)
    if problem:
        raise ConfigError(f"CHECKPOINT_DIR = {cfg.CHECKPOINT_DIR!r} cannot hold checkpoints: {problem}")


def load_resume_checkpoint(cfg):
    """The checkpoint to continue (RESUME) or None; ConfigError if the choice cannot work."""
    path = checkpoint_path(cfg)
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as e:
        if cfg.RESUME:
            raise ConfigError(f"RESUME = True but {e}") from None
        if isinstance(e, NoCheckpointError):
            return None
        raise ConfigError(f"{e}; move it away or choose another CHECKPOINT_DIR") from None
    if not cfg.RESUME:
        raise ConfigError(f"{path} exists: set RESUME = True to continue it, or move it away or "
                          f"choose another CHECKPOINT_DIR to start again")
    differences = run_differences(checkpoint["hyperparams"], constants(cfg))
    if differences:
        name = differences[0]
        raise ConfigError(f"RESUME: {name} = {getattr(cfg, name)!r} differs from the checkpoint's "
                          f"{checkpoint['hyperparams'].get(name)!r}")
    if checkpoint["diverged"]:
        raise ConfigError(f"RESUME: the run in {path} diverged at epoch {checkpoint['history'][-1]['epoch']}")
    return checkpoint


def main(argv):
    exit_with_help_if_asked(__doc__, argv)
    handle_interrupts()
    process = process_from_env()
    try:
        cfg = load_config(argv)
        check_inputs(cfg, process)
        device = pick_device(cfg.DEVICE, process)
        refuse_cuda_graphs_off_cuda(cfg, device)
        # Refuse before the data is read: a checkpoint another run is training, or one that
        # these settings cannot continue or must not overwrite.
        if process.is_main:
            refuse_if_locked(lock_path(checkpoint_path(cfg)), checkpoint_path(cfg))
        earlier = load_resume_checkpoint(cfg)
        if process.is_main and device.type == "cpu":
            warn_if_too_long(cfg, earlier)
        data = training_data(cfg.DATA_DIR, cfg.NUM_WORKERS, cfg.VALIDATION_SIZE, cfg.TRAIN_SUBSET)
        # One run per checkpoint: the lock is held until this process ends, then the checkpoint
        # is read again, as another run may have written it meanwhile.
        lock = hold_lock(lock_path(checkpoint_path(cfg)), checkpoint_path(cfg)) if process.is_main else None
        checkpoint = load_resume_checkpoint(cfg)
    except (ConfigError, DataError, DeviceError, InUseError) as e:
        fail(e, EXIT_BAD_INPUT)
    except KeyboardInterrupt as stop:  # while the data loads, say
        fail(f"{interrupt_name(stop)} before training started; nothing was written", interrupt_exit_status(stop))
    try:
        train(cfg, process, device, data, checkpoint, argv)
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM
        if process.is_main:
            report_interrupt(cfg, argv, stop)
        sys.exit(interrupt_exit_status(stop))
    finally:
        if lock is not None:
            lock.close()


def warn_if_too_long(cfg, checkpoint):
    """Before the data is read: a warning if the epochs left need more than a CPU should be given."""
    epochs_left = cfg.NUM_EPOCHS - (checkpoint["epoch"] if checkpoint else 0)
    warning = too_long_warning(run_seconds(cfg, epochs_left), "this run", "train")
    if warning:
        print(warning, file=sys.stderr, flush=True)


def make_deterministic():
    """Deterministic CUDA kernels: cuDNN's deterministic algorithms, cuBLAS with a fixed
    workspace (set before cuBLAS starts). warn_only: an op that has no deterministic version
    (adaptive average pooling's backward, whose 1x1 output adds each input once) warns instead of
    stopping the run. The CPU kernels used here are deterministic already."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def train(cfg, process, device, data, checkpoint, argv=()):
    set_threads(cfg.NUM_THREADS)
    if cfg.DETERMINISTIC:
        make_deterministic()
    init_distributed(process, device)
    trainer = Trainer(cfg, process, device, data)
    if process.is_main:
        print(f"pytorch-LARS: {trainer.path} on {device} x {process.world_size} process(es)\n"
              f"{format_settings(constants(cfg))}", flush=True)
    if checkpoint is not None:
        trainer.resume(checkpoint)
        if trainer.epoch >= cfg.NUM_EPOCHS:
            trainer.log(f"{trainer.path} is a complete run: {trainer.epoch} of {cfg.NUM_EPOCHS} epochs, "
                        f"final top-1 {evaluated(trainer.history)[-1]['test_acc']:.2f}%; nothing to do")
            return
        trainer.log(f"resumed at epoch {trainer.epoch}")
    else:
        trainer.save()  # epoch 0: a resumable starting point
    interactive = process.is_main and sys.stderr.isatty()
    finished = trainer.run(progress=tqdm if interactive else None)
    if not finished:
        last = trainer.history[-1]
        if trainer.diverged:
            fail(f"training loss {last['train_loss']:.4g} in epoch {last['epoch']} exceeds DIVERGENCE_LOSS = "
                 f"{cfg.DIVERGENCE_LOSS:g}; stopped, {trainer.path} records the divergence", EXIT_DIVERGED)
        if process.is_main:
            mark_diverged(trainer.path, trainer.history)
        fail(f"loss became non-finite in epoch {last['epoch']}; "
             f"{trainer.path} keeps the last finite state and records the divergence", EXIT_DIVERGED)
    last = evaluated(trainer.history)[-1]
    val_args = [a for a in argv if not a.lower().startswith("--resume=")]
    trainer.log(f"done: {trainer.path}, top-1 {last['test_acc']:.2f}% after {plural(last['epoch'], 'epoch')}; "
                f"see it with: {shlex.join(['python', 'val.py', *val_args])}")
    if process.distributed:
        dist.destroy_process_group()


def report_interrupt(cfg, argv, stop):
    """One line for Ctrl-C or SIGTERM: what the checkpoint keeps and the command that continues it."""
    path = checkpoint_path(cfg)
    try:
        epoch = load_checkpoint(path)["epoch"]
    except CheckpointError:
        print(f"{interrupt_name(stop)} before the first checkpoint was written; nothing was saved", file=sys.stderr)
        return
    command = shlex.join(["python", "train.py", *[a for a in argv if not a.lower().startswith("--resume=")],
                          "--resume=True"])
    print(f"{interrupt_name(stop)}: {path} keeps epoch {epoch} of {cfg.NUM_EPOCHS}; continue with: {command}",
          file=sys.stderr)


def mark_diverged(path, history):
    """Record the divergence in the last finite checkpoint without replacing its weights."""
    checkpoint = load_checkpoint(path)
    checkpoint["history"] = history
    checkpoint["diverged"] = True
    save_checkpoint(path, {k: v for k, v in checkpoint.items() if k not in ("format", "version")})


if __name__ == "__main__":
    main(sys.argv[1:])
