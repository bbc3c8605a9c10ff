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

import contextlib
import math
import os
import shlex
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from checkpoints import (CheckpointError, InUseError, NoCheckpointError, checkpoint_path, hold_lock,
                         load_checkpoint, load_model_state, lock_path, refuse_if_locked, save_checkpoint,
                         writable_dir_problem)
from config import ConfigError, constants, exit_with_help_if_asked, load_config, run_differences, validate
from data import Batches, DataError, training_data
from diagnostics import LayerStats
from estimate import run_seconds, too_long_warning
from evaluation import autocast, test_accuracy
from lars import LARS
from models import MODELS, build_model
from scheduler import GradualWarmupScheduler, MultiStepDecay, PolynomialLRDecay
from utils import (EXIT_BAD_INPUT, EXIT_DIVERGED, DeviceError, describe_machine, evaluated, fail, format_accuracies,
                   format_duration, format_settings, handle_interrupts, init_distributed, interrupt_exit_status,
                   interrupt_name, pick_device, plural, process_from_env, set_threads)

ESTIMATE_AFTER_STEPS = 10  # steps of the first epoch after which the run's length is estimated


def build_optimizer(model, cfg):
    """SGD or LARS over the model's named parameters (LARS's trust ratios are keyed by name)."""
    named = list(model.named_parameters())
    groups = [{"params": named}]
    if cfg.EXCLUDE_BN_BIAS:  # biases and norm weights are the 1-d tensors of these models
        groups = [{"params": [(n, p) for n, p in named if p.ndim > 1]},
                  {"params": [(n, p) for n, p in named if p.ndim <= 1], "weight_decay": 0.0,
                   **({"adapt": False} if cfg.WITH_LARS else {})}]
    if not cfg.WITH_LARS:
        return torch.optim.SGD(groups, lr=cfg.LR, momentum=cfg.MOMENTUM, weight_decay=cfg.WEIGHT_DECAY)
    return LARS(groups, lr=cfg.LR, momentum=cfg.MOMENTUM, weight_decay=cfg.LARS_WEIGHT_DECAY,
                trust_coef=cfg.TRUST_COEF)


def build_scheduler(optimizer, cfg, steps_per_epoch):
    """Warm-up over WARMUP_EPOCHS (rounded to whole steps), then poly decay reaching END_LR at the
    last step, or step decay: at STEP_MILESTONES (epochs from the start, rounded to whole steps),
    else every STEP_EPOCHS after warm-up."""
    warmup_steps = round(cfg.WARMUP_EPOCHS * steps_per_epoch)
    total_steps = cfg.NUM_EPOCHS * steps_per_epoch
    if cfg.LR_SCHEDULE == "poly":
        after = PolynomialLRDecay(optimizer, max(1, total_steps - 1 - warmup_steps), cfg.END_LR, cfg.POLY_POWER)
    else:
        every = cfg.STEP_EPOCHS * steps_per_epoch
        milestones = ([round(m * steps_per_epoch) - warmup_steps for m in cfg.STEP_MILESTONES]
                      if cfg.STEP_MILESTONES is not None else range(every, total_steps - warmup_steps, every))
        after = MultiStepDecay(optimizer, milestones, cfg.STEP_GAMMA)
    return GradualWarmupScheduler(optimizer, cfg.WARMUP_MULTIPLIER, warmup_steps, after)


class Trainer:
    """One training run: model, optimizer, schedule, data and checkpoint of a resolved config."""

    def __init__(self, cfg, process, device, data):
        self.cfg, self.process, self.device = cfg, process, device
        self.path = checkpoint_path(cfg)
        self.per_rank_batch = cfg.BATCH_SIZE // process.world_size
        self.micro_batch = cfg.MICRO_BATCH_SIZE or self.per_rank_batch
        self.batches = Batches(data, device, cfg.CHANNELS_LAST)
        self.data_mean, self.data_std = data["mean"].tolist(), data["std"].tolist()
        self.steps_per_epoch = self.batches.steps_per_epoch(cfg.BATCH_SIZE)
        torch.manual_seed(cfg.SEED)
        memory_format = torch.channels_last if cfg.CHANNELS_LAST else torch.contiguous_format
        self.model = build_model(cfg.MODEL, he_init=cfg.HE_INIT, zero_init_residual=cfg.ZERO_INIT_RESIDUAL)
        self.model.to(device, memory_format=memory_format)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.AMP and device.type == "cuda")
        self.epoch, self.history, self.diverged = 0, [], False
        self.stats = LayerStats(self.model, self.optimizer, cfg.LAYER_STATS_EVERY)
        self.network = torch.compile(self.model) if cfg.COMPILE else self.model
        self.train_network = self.network
        if process.distributed:
            self.train_network = DistributedDataParallel(self.network, device_ids=[device] if device.type == "cuda" else None)

    def autocast(self):
        return autocast(self.device, self.cfg.AMP)

    # --- checkpoints ---

    def state(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": self.epoch, "history": self.history, "diverged": self.diverged,
                "steps_per_epoch": self.steps_per_epoch, "layer_stats": self.stats.records,
                "normalisation": {"mean": self.data_mean, "std": self.data_std},
                "hyperparams": constants(self.cfg),
                "machine": describe_machine(self.device, self.process.world_size)}

    def save(self):
        if self.process.is_main:
            save_checkpoint(self.path, self.state())
        if self.process.distributed:
            dist.barrier()

    def resume(self, checkpoint):
        load_model_state(self.model, checkpoint["model"], self.path)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch, self.history = checkpoint["epoch"], checkpoint["history"]
        self.stats.records = checkpoint.get("layer_stats") or self.stats.records

    # --- training ---

    def run(self, progress=None):
        """Train up to NUM_EPOCHS; return False if the run diverged: its loss became non-finite
        (the checkpoint keeps the last finite epoch), or an epoch's mean training loss exceeded
        DIVERGENCE_LOSS (that epoch is evaluated and saved, marked diverged)."""
        started, first_epoch = time.perf_counter(), self.epoch
        while self.epoch < self.cfg.NUM_EPOCHS:
            loss, seconds = self.train_epoch(progress)
            previous_time = self.history[-1]["time"] if self.history else 0.0
            if not math.isfinite(loss):
                unmeasured = {"test_acc": math.nan}
                if self.batches.validation is not None:
                    unmeasured["val_acc"] = math.nan
                self.history.append({"epoch": self.epoch + 1, **unmeasured,
                                     "train_loss": math.nan, "time": previous_time + seconds})
                return False
            self.diverged = loss > self.cfg.DIVERGENCE_LOSS
            self.epoch += 1
            accuracies = self.evaluate() if self.evaluates_after(self.epoch) else {}
            self.history.append({"epoch": self.epoch, **accuracies, "train_loss": loss,
                                 "time": previous_time + seconds})
            self.save()
            per_epoch = (time.perf_counter() - started) / (self.epoch - first_epoch)  # with evaluation
            self.log(f"epoch {self.epoch:3d}/{self.cfg.NUM_EPOCHS} | loss {loss:.4f} | {format_accuracies(accuracies)}"
                     f"time to train {format_duration(previous_time + seconds)} | "
                     f"about {format_duration(per_epoch * (self.cfg.NUM_EPOCHS - self.epoch))} left")
            if self.diverged:
                return False
        return True

    def train_epoch(self, progress=None):
        """Mean training loss of one epoch (nan on divergence) and its training seconds."""
        self.train_network.train()
        total = torch.zeros((), device=self.device)
        start = time.perf_counter()
        batches = self.batches.train_epoch(self.epoch, self.cfg.SEED, self.cfg.BATCH_SIZE,
                                           self.process.rank, self.process.world_size)
        if progress is not None:
            batches = progress(batches, total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}")
        for step, (images, labels) in enumerate(batches):
            loss = self.train_step(images, labels, step)
            if loss is None:
                self.stats.discard_pending()
                return math.nan, time.perf_counter() - start
            total += loss
            if step + 1 == ESTIMATE_AFTER_STEPS and not self.history and step + 1 < self.steps_per_epoch:
                self.log_first_estimate((time.perf_counter() - start) / (step + 1))
        mean_loss = total.item() / self.steps_per_epoch
        self.stats.flush()  # the epoch's layer statistics, read from the device once
        return mean_loss, time.perf_counter() - start

    def log_first_estimate(self, seconds_per_step):
        """A first guess of the run's length, before an epoch has ended: at 200 epochs a default
        run takes days on a CPU, which a user should hear about in seconds, not hours."""
        per_epoch = seconds_per_step * self.steps_per_epoch
        self.log(f"first {ESTIMATE_AFTER_STEPS} steps: about {format_duration(per_epoch)} per epoch of training, "
                 f"{format_duration(per_epoch * self.cfg.NUM_EPOCHS)} for {plural(self.cfg.NUM_EPOCHS, 'epoch')}")

    def train_step(self, images, labels, step_in_epoch=None):
        """Forward and backward over micro-batches, then one optimizer step; return the mean loss
        over the global batch, or None, without stepping, if it is not finite. The layer
        statistics are recorded around the step when ``step_in_epoch`` is one of theirs."""
        step_loss = torch.zeros((), device=self.device)
        chunks = list(zip(images.split(self.micro_batch), labels.split(self.micro_batch)))
        for i, (x, y) in enumerate(chunks):
            last = i == len(chunks) - 1
            sync = contextlib.nullcontext() if last or not self.process.distributed else self.train_network.no_sync()
            with sync:
                with self.autocast():
                    loss = F.cross_entropy(self.train_network(x), y, label_smoothing=self.cfg.LABEL_SMOOTHING)
                    loss = loss * (len(y) / len(labels))
                self.scaler.scale(loss).backward()
            step_loss += loss.detach()
        if self.process.distributed:
            dist.all_reduce(step_loss)  # gloo has no AVG
            step_loss /= self.process.world_size
        # The one host synchronisation per step: a non-finite loss stops the run before the
        # optimizer applies it.
        finite = bool(torch.isfinite(step_loss))
        if finite:
            record = step_in_epoch is not None and self.stats.wants(step_in_epoch)
            if record:
                self.scaler.unscale_(self.optimizer)  # the statistics see true gradients; step() then does not unscale again
                before = self.stats.before_step()
            self.scaler.step(self.optimizer)
            if record:
                self.stats.after_step(self.epoch * self.steps_per_epoch + step_in_epoch, before)
            self.scaler.update()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return step_loss if finite else None

    def evaluates_after(self, epoch):
        """Whether ``epoch`` (counted from 1) ends with an evaluation: every EVAL_EVERY-th, the
        last, and a diverged one. Evaluation changes no weight and draws from no generator that
        training uses, so the interval changes only which epochs the history has accuracies for."""
        return epoch % self.cfg.EVAL_EVERY == 0 or epoch == self.cfg.NUM_EPOCHS or self.diverged

    @torch.no_grad()
    def evaluate(self):
        """{"test_acc": top-1 test accuracy in percent, and "val_acc": on the validation hold-out
        when there is one}; every image is counted once across processes."""
        if self.cfg.PRECISE_BN:
            self.recompute_bn_statistics()
        if self.process.distributed:  # every rank evaluates rank 0's batch-norm statistics
            for buffer in self.model.buffers():
                dist.broadcast(buffer, 0)
        # Without DDP: ranks see different numbers of test batches.
        accuracies = {"test_acc": test_accuracy(self.network, self.batches.test, self.autocast, self.process)}
        if self.batches.validation is not None:
            accuracies["val_acc"] = test_accuracy(self.network, self.batches.validation, self.autocast, self.process)
        return accuracies

    @torch.no_grad()
    def recompute_bn_statistics(self):
        """Precise BN: replace the running statistics by their average over PRECISE_BN training
        micro-batches (the batches BN normalises over in training), in train mode without
        gradients. Changes only BN buffers; the same on every rank."""
        norms = [m for m in self.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        self.model.train()
        for images in self.batches.bn_calibration_batches(self.micro_batch, self.cfg.PRECISE_BN):
            with self.autocast():
                self.model(images)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum

    def log(self, message):
        if self.process.is_main:
            tqdm.write(message)
            sys.stdout.flush()  # at once, also into a pipe: a reader waits for these lines


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
