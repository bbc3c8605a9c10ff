"""How long training will take on this machine, known before it starts: a few measured training
passes of the model on random images, times the images a run (or a sweep's runs) will train on.

A CPU user who starts the default protocol (ResNet-50, 200 epochs: the original's GPU runs) hears
that it takes days, and which preset fits a CPU, before the data is even read. The measurement
takes a second or two, draws from no generator that training uses, and is made only on the CPU.
"""

import time

import torch
import torch.nn.functional as F

from models import build_model
from utils import format_duration

TOO_LONG_SECONDS = 12 * 3600  # training beyond this on a CPU gets a warning (not a refusal)
MEASURE_IMAGES = 16  # images per measured pass: enough to time, quick even for ResNet-50
MEASURED_PASSES = 2  # after one untimed pass
TRAINING_IMAGES = 50_000  # CIFAR-10's training set
CPU_PRESETS = {"train": "configs/cpu.py", "sweep": "configs/cpu_sweep.py"}


def training_images(cfg):
    """Images one epoch trains on: the training set less the validation split, or the subset."""
    return cfg.TRAIN_SUBSET or TRAINING_IMAGES - cfg.VALIDATION_SIZE


def seconds_per_image(cfg):
    """Seconds of one training pass (forward, backward) per image of cfg's model on the CPU, as
    trained (autocast, channels-last), measured on MEASURE_IMAGES random images."""
    with torch.random.fork_rng(devices=[]):
        model = build_model(cfg.MODEL, he_init=cfg.HE_INIT, zero_init_residual=cfg.ZERO_INIT_RESIDUAL).train()
        memory_format = torch.channels_last if cfg.CHANNELS_LAST else torch.contiguous_format
        model = model.to(memory_format=memory_format)
        images = torch.randn(MEASURE_IMAGES, 3, 32, 32).to(memory_format=memory_format)
        labels = torch.randint(0, 10, (MEASURE_IMAGES,))
        start = None
        for measured in [False] + [True] * MEASURED_PASSES:  # the first pass sets things up
            if measured and start is None:
                start = time.perf_counter()
            with torch.autocast("cpu", torch.bfloat16, enabled=cfg.AMP):
                loss = F.cross_entropy(model(images), labels)
            loss.backward()
        return (time.perf_counter() - start) / (MEASURED_PASSES * MEASURE_IMAGES)


def run_seconds(cfg, epochs=None, per_image=None):
    """Estimated training seconds of ``epochs`` (default: all) of cfg's run on the CPU."""
    per_image = seconds_per_image(cfg) if per_image is None else per_image
    return per_image * training_images(cfg) * (cfg.NUM_EPOCHS if epochs is None else epochs)


def too_long_warning(seconds, what, command):
    """A one-line warning when ``seconds`` of training is more than a CPU should be given, else
    None. ``command`` is "train" or "sweep": which CPU preset to name."""
    if seconds <= TOO_LONG_SECONDS:
        return None
    return (f"warning: {what} needs about {format_duration(seconds)} of training on this CPU (measured "
            f"just now); for a CPU-sized {'run' if command == 'train' else 'sweep'}: python {command}.py "
            f"{CPU_PRESETS[command]} (README, Quick start). Going on; Ctrl-C stops it.")


def fits_the_cpu(cfg):
    """Whether cfg's whole run takes at most TOO_LONG_SECONDS of training on this CPU."""
    return run_seconds(cfg) <= TOO_LONG_SECONDS
