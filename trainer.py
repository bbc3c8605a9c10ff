"""One training run, below train.py (its command) and the benchmarks: the optimizer and LR
schedule of a resolved config, and the Trainer that builds the model, trains epoch by epoch,
evaluates and checkpoints."""

import contextlib
import math
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from checkpoints import checkpoint_path, load_model_state, save_checkpoint
from config import constants
from data import Batches
from diagnostics import LayerStats
from evaluation import autocast, test_accuracy
from ghost_bn import use_ghost_batch_norm
from lars import LARS
from models import build_model
from scheduler import GradualWarmupScheduler, MultiStepDecay, PolynomialLRDecay
from utils import DeviceError, add_machine, describe_machine, format_accuracies, format_duration, machines_so_far, plural

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


# How CUDA_GRAPHS compiles the model and the optimizer step: "reduce-overhead" replays each as a
# CUDA graph, one launch where eager PyTorch launches a kernel per operation.
CUDA_GRAPH_COMPILE = {"mode": "reduce-overhead"}


def refuse_cuda_graphs_off_cuda(cfg, device):
    """CUDA_GRAPHS on a machine whose device turned out not to be CUDA (DEVICE = "auto")."""
    if cfg.CUDA_GRAPHS and device.type != "cuda":
        raise DeviceError(f"CUDA_GRAPHS = True needs a CUDA device, and this run is on {device.type}; "
                          f"set --cuda_graphs=False")


def lr_tensors(optimizer, device):
    """Each group's LR as a 0-dim tensor on ``device``, which the schedule fills in place: a
    compiled step reads it instead of being compiled again for every new value. The schedule's
    base LRs stay Python floats, so that setting an LR reads nothing back from the device."""
    for group in optimizer.param_groups:
        lr = float(group["lr"])
        group["lr"] = torch.tensor(lr, device=device)
        group.setdefault("initial_lr", lr)


def uses_ghost_bn(cfg, device, per_rank_batch):
    """Whether BN takes its micro-batch statistics in one pass (ghost_bn.py) instead of a pass per
    micro-batch: GHOST_BN, or with None on CUDA, where small passes wait on kernel launches."""
    wanted = cfg.GHOST_BN if cfg.GHOST_BN is not None else device.type == "cuda"
    return wanted and cfg.MICRO_BATCH_SIZE is not None and cfg.MICRO_BATCH_SIZE < per_rank_batch


class Trainer:
    """One training run: model, optimizer, schedule, data and checkpoint of a resolved config."""

    def __init__(self, cfg, process, device, data):
        self.cfg, self.process, self.device = cfg, process, device
        self.path = checkpoint_path(cfg)
        self.per_rank_batch = cfg.BATCH_SIZE // process.world_size
        self.micro_batch = cfg.MICRO_BATCH_SIZE or self.per_rank_batch  # the images BN normalises together
        self.ghost_bn = uses_ghost_bn(cfg, device, self.per_rank_batch)
        self.pass_size = self.per_rank_batch if self.ghost_bn else self.micro_batch  # images per forward pass
        self.batches = Batches(data, device, cfg.CHANNELS_LAST)
        self.data_mean, self.data_std = data["mean"].tolist(), data["std"].tolist()
        self.steps_per_epoch = self.batches.steps_per_epoch(cfg.BATCH_SIZE)
        torch.manual_seed(cfg.SEED)
        memory_format = torch.channels_last if cfg.CHANNELS_LAST else torch.contiguous_format
        self.model = build_model(cfg.MODEL, he_init=cfg.HE_INIT, zero_init_residual=cfg.ZERO_INIT_RESIDUAL)
        self.model.to(device, memory_format=memory_format)
        if self.ghost_bn:  # the micro-batches' statistics in one pass
            use_ghost_batch_norm(self.model, self.micro_batch)
        self.optimizer = build_optimizer(self.model, cfg)
        if cfg.CUDA_GRAPHS:
            lr_tensors(self.optimizer, device)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.AMP and device.type == "cuda")
        self.epoch, self.history, self.diverged = 0, [], False
        self.machine = describe_machine(device, process.world_size)
        self.machines = [{"from_epoch": 1, **self.machine}]  # resume() adds another machine
        self.stats = LayerStats(self.model, self.optimizer, cfg.LAYER_STATS_EVERY)
        self.network = self.model
        if cfg.CUDA_GRAPHS:
            self.network = torch.compile(self.model, **CUDA_GRAPH_COMPILE)
            # An attribute of this optimizer, so that GradScaler.step, which calls
            # optimizer.step(), runs the compiled step too.
            self.optimizer.step = torch.compile(self.optimizer.step, **CUDA_GRAPH_COMPILE)
        elif cfg.COMPILE:
            self.network = torch.compile(self.model)
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
                "machines": self.machines}

    def save(self):
        if self.process.is_main:
            save_checkpoint(self.path, self.state())
        if self.process.distributed:
            dist.barrier()

    def resume(self, checkpoint):
        load_model_state(self.model, checkpoint["model"], self.path)
        self.optimizer.load_state_dict(checkpoint["optimizer"])  # its LRs as saved: floats, or tensors
        if self.cfg.CUDA_GRAPHS:
            lr_tensors(self.optimizer, self.device)
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch, self.history = checkpoint["epoch"], checkpoint["history"]
        self.stats.records = checkpoint.get("layer_stats") or self.stats.records
        self.machines = add_machine(machines_so_far(checkpoint), self.machine, self.epoch + 1)

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
                self.record_non_finite_epoch(previous_time + seconds)
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

    def record_non_finite_epoch(self, time_to_train):
        """The history row of an epoch cut short by a non-finite loss: nan everywhere it measures."""
        unmeasured = {"test_acc": math.nan}
        if self.batches.validation is not None:
            unmeasured["val_acc"] = math.nan
        self.history.append({"epoch": self.epoch + 1, **unmeasured, "train_loss": math.nan, "time": time_to_train})

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
        if self.cfg.CUDA_GRAPHS:  # the graphs' outputs of the previous step may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        step_loss = self.forward_backward(images, labels)
        # The one host synchronisation per step: a non-finite loss stops the run before the
        # optimizer applies it.
        finite = bool(torch.isfinite(step_loss))
        if finite:
            self.optimizer_step(step_in_epoch)
        self.optimizer.zero_grad(set_to_none=True)
        return step_loss if finite else None

    def forward_backward(self, images, labels):
        """The gradients of the global batch's mean loss, accumulated over micro-batches (DDP
        reduces them with the last); the mean loss, averaged over processes."""
        step_loss = torch.zeros((), device=self.device)
        chunks = list(zip(images.split(self.pass_size), labels.split(self.pass_size)))
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
        return step_loss

    def optimizer_step(self, step_in_epoch):
        """One step of the optimizer (through the GradScaler) and of the schedule, with the layer
        statistics around it when ``step_in_epoch`` is one of theirs."""
        record = step_in_epoch is not None and self.stats.wants(step_in_epoch)
        if record:
            self.scaler.unscale_(self.optimizer)  # the statistics see true gradients; step() then does not unscale again
            before = self.stats.before_step()
        self.scaler.step(self.optimizer)
        if record:
            self.stats.after_step(self.epoch * self.steps_per_epoch + step_in_epoch, before)
        self.scaler.update()
        self.scheduler.step()

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
