"""Cost of LARS against torch.optim.SGD, measured side by side in one run.

    python benchmarks/optimizer_step.py --data_dir=PATH_TO/cifar10 [--name=value ...] [--compile]
                                        [--baseline=PATH/lars.py]

1. optimizer.step() on the parameters of the CIFAR ResNet-18 and torchvision's ResNet-50
   (channels-last, as train.py keeps them) with random gradients: SGD's for-loop and foreach
   implementations (same momentum and weight decay) and LARS's multi-tensor (default) and
   single-tensor ones, interleaved in random order; medians and the ratio to the faster SGD.
   --compile adds LARS's step, with its default arguments, under torch.compile (compile time
   printed separately). --baseline adds the same LARS rows for another version of lars.py (an
   earlier commit's, say), so a change is measured before and after in the same run.
2. One training epoch of configs/cpu.py with SGD and with LARS, in the order SGD, LARS, LARS,
   SGD; the ratio of the mean epoch times. Overrides apply to this preset.
"""

import importlib.util
import os
import random
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from config import load_config  # noqa: E402
from data import load_cifar10, subset  # noqa: E402
from lars import LARS  # noqa: E402
from models import build_model  # noqa: E402
from trainer import Trainer  # noqa: E402
from utils import Process, pick_device  # noqa: E402
from cli import run  # noqa: E402  (beside this file)

MODELS = ("resnet18", "resnet50_imagenet")
STEPS = 15
HYPER = {"lr": 0.1, "momentum": 0.9}
PRESET = os.path.join(ROOT, "configs", "cpu.py")


def model_and_parameter_copies(model_name, device=torch.device("cpu")):
    """The model (channels-last on ``device``) and a function that returns a fresh copy of its
    parameters with the same random gradients, one per optimizer."""
    torch.manual_seed(0)
    model = build_model(model_name).to(device, memory_format=torch.channels_last)
    grads = [torch.randn_like(p) * 1e-2 for p in model.parameters()]

    def params():
        copies = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters()]
        for p, g in zip(copies, grads):
            p.grad = g.clone()
        return copies

    return model, params


def optimizers(model_name, with_compile, baseline=None):
    """Name -> zero-argument step function, each on its own copy of the parameters."""
    model, params = model_and_parameter_copies(model_name)

    steps = {
        "SGD for-loop": torch.optim.SGD(params(), weight_decay=5e-4, foreach=False, **HYPER).step,
        "SGD foreach": torch.optim.SGD(params(), weight_decay=5e-4, foreach=True, **HYPER).step,
        "LARS multi-tensor": LARS(params(), weight_decay=5e-3, trust_coef=0.1, **HYPER).step,
        "LARS single-tensor": LARS(params(), weight_decay=5e-3, trust_coef=0.1, foreach=False, **HYPER).step,
    }
    if baseline is not None:
        steps["baseline LARS multi-tensor"] = baseline.LARS(params(), weight_decay=5e-3, trust_coef=0.1, **HYPER).step
        steps["baseline LARS single-tensor"] = baseline.LARS(params(), weight_decay=5e-3, trust_coef=0.1,
                                                             foreach=False, **HYPER).step
    if with_compile:
        steps["LARS compiled"] = compiled_step(params())
    return model, steps


def load_baseline(path):
    """Another version of lars.py, imported as its own module."""
    spec = importlib.util.spec_from_file_location("baseline_lars", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compiled_step(params):
    # Default arguments (foreach=None); a tensor LR keeps a changing LR from recompiling the step.
    optimizer = LARS(params, lr=torch.tensor(HYPER["lr"]), momentum=HYPER["momentum"],
                     weight_decay=5e-3, trust_coef=0.1)
    step = torch.compile(optimizer.step)
    start = time.perf_counter()
    step()
    print(f"  (LARS compiled: first call, including compilation, {time.perf_counter() - start:.1f} s)")
    return step


def time_steps(steps, rounds=STEPS, timer=None):
    """Median seconds of each step function over ``rounds`` rounds in random order, after one
    warm-up call each; ``timer(step)`` times one call (default: the host's clock)."""
    for step in steps.values():  # warm-up: state allocation, caches
        step()
    timer = timer or _host_time
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name in random.sample(list(steps), len(steps)):
            times[name].append(timer(steps[name]))
    return {name: statistics.median(t) for name, t in times.items()}


def _host_time(step):
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def report_steps(with_compile, baseline=None):
    for model_name in MODELS:
        model, steps = optimizers(model_name, with_compile, baseline)
        tensors = list(model.parameters())
        print(f"\noptimizer.step() on {model_name}: {sum(p.numel() for p in tensors) / 1e6:.1f}M "
              f"parameters in {len(tensors)} tensors, median of {STEPS}")
        medians = time_steps(steps)
        sgd = min(medians["SGD for-loop"], medians["SGD foreach"])
        print("| implementation | ms per step | ratio to the faster SGD |\n|---|---|---|")
        for name, seconds in medians.items():
            print(f"| {name} | {seconds * 1e3:.2f} | {seconds / sgd:.2f} |")


def report_epochs(argv):
    cfg = load_config([PRESET, *argv])
    device = pick_device(cfg.DEVICE, Process())
    data = subset(load_cifar10(cfg.DATA_DIR, cfg.NUM_WORKERS), cfg.TRAIN_SUBSET)
    trainers = {with_lars: Trainer(load_config([PRESET, *argv, f"--with_lars={with_lars}"]),
                                   Process(), device, data)
                for with_lars in (False, True)}
    seconds = {False: [], True: []}
    for with_lars in (False, True, True, False):
        seconds[with_lars].append(trainers[with_lars].train_epoch()[1])
    sgd, lars = (statistics.mean(seconds[k]) for k in (False, True))
    print(f"\none training epoch of configs/cpu.py ({trainers[False].steps_per_epoch} steps of "
          f"{cfg.BATCH_SIZE}), order SGD, LARS, LARS, SGD\n"
          f"| optimizer | seconds per epoch (mean of 2) |\n|---|---|\n"
          f"| SGD | {sgd:.1f} |\n| LARS | {lars:.1f} |\nLARS / SGD epoch time: {lars / sgd:.3f}")


def main(argv):
    with_compile = "--compile" in argv
    baselines = [a.split("=", 1)[1] for a in argv if a.startswith("--baseline=")]
    argv = [a for a in argv if a != "--compile" and not a.startswith("--baseline=")]
    load_config([PRESET, *argv])  # a bad setting is refused now, not after the timed steps
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    report_steps(with_compile, load_baseline(baselines[-1]) if baselines else None)
    report_epochs(argv)


if __name__ == "__main__":
    run(main, __doc__, sys.argv[1:])
