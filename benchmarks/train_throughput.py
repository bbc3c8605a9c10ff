"""Training throughput (images per second) of configs/cpu.py's model, side by side in one run.

    python benchmarks/train_throughput.py --data_dir=PATH_TO/cifar10 [--name=value ...] [--compile]

(a) the model alone on one fixed in-memory batch (the ceiling), in float32 and bf16 autocast,
    NCHW and channels-last; (b) train.py's own loop (Trainer.train_epoch: uint8 data on the
    device, batch augmentation, the preset's AMP and memory format), with the layer statistics
    also at batch 8192 as one batch, as 64 micro-batches of 128, and as one pass with BN statistics
    per 128 images (GHOST_BN); (c) a loop in the original project's style: torchvision
    ImageFolder with PIL transforms through a DataLoader (2 workers), float32 NCHW; (d) train.py
    under torchrun with 1 and 2 processes (gloo). (a)-(c) are measured twice, interleaved, and
    the better of the two is kept. --compile adds train.py's loop with COMPILE = True. Last, the
cost of the layer statistics: train.py's loop with them off, at their default interval and at
every step, in 7 interleaved rounds (medians).
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from config import load_config  # noqa: E402
from data import load_cifar10, subset  # noqa: E402
from models import build_model  # noqa: E402
from trainer import Trainer  # noqa: E402
from checkpoints import checkpoint_path, load_checkpoint  # noqa: E402
from utils import Process  # noqa: E402
from cli import run  # noqa: E402  (beside this file)

PRESET = os.path.join(ROOT, "configs", "cpu.py")
STEPS = 40  # optimizer steps of 128 images per measurement
STATS_ROUNDS = 7
ROUNDS = 2


def model_alone(cfg, amp, channels_last):
    """Forward, backward and SGD step on one fixed batch, as train.py does them."""
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(cfg.MODEL).to(memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images = torch.randn(cfg.BATCH_SIZE, 3, 32, 32).to(memory_format=memory_format)
    labels = torch.randint(0, 10, (cfg.BATCH_SIZE,))

    def run():
        for _ in range(STEPS // 2):
            with torch.autocast("cpu", torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return STEPS // 2 * cfg.BATCH_SIZE

    return run


def train_loop(argv, data, *overrides, steps=STEPS):
    cfg = load_config([PRESET, *argv, *overrides])
    trainer = Trainer(cfg, Process(), torch.device("cpu"), subset(data, steps * cfg.BATCH_SIZE))

    def run():
        trainer.train_epoch()
        return steps * cfg.BATCH_SIZE

    return run


def original_style(cfg):
    import torchvision
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])
    dataset = torchvision.datasets.ImageFolder(os.path.join(cfg.DATA_DIR, "train"), transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.BATCH_SIZE, shuffle=True, num_workers=2,
                                         persistent_workers=True)
    torch.manual_seed(0)
    model = build_model(cfg.MODEL, he_init=True).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def run():
        batches = iter(loader)
        for _ in range(STEPS):
            images, labels = next(batches)
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return STEPS * cfg.BATCH_SIZE

    return run


def images_per_second(run):
    start = time.perf_counter()
    images = run()
    return images / (time.perf_counter() - start)


def torchrun_throughput(argv, processes, images):
    """Images per second of training time that train.py records, under torchrun."""
    with tempfile.TemporaryDirectory() as checkpoints:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   "train.py", PRESET, *argv, f"--train_subset={images}", "--num_epochs=1",
                   "--warmup_epochs=0", f"--checkpoint_dir={checkpoints}"]
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cfg = load_config([PRESET, *argv, f"--checkpoint_dir={checkpoints}"])
        history = load_checkpoint(checkpoint_path(cfg))["history"]
        return images // cfg.BATCH_SIZE * cfg.BATCH_SIZE / history[-1]["time"]


def main(argv):
    with_compile = "--compile" in argv
    argv = [a for a in argv if a != "--compile"]
    cfg = load_config([PRESET, *argv])
    torch.set_num_threads(os.cpu_count() or 1)
    data = load_cifar10(cfg.DATA_DIR, cfg.NUM_WORKERS)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {cfg.MODEL}, "
          f"batch {cfg.BATCH_SIZE}, AMP {cfg.AMP}, channels-last {cfg.CHANNELS_LAST}")
    candidates = {
        "(a) model alone, float32, NCHW": model_alone(cfg, False, False),
        "(a) model alone, float32, channels-last": model_alone(cfg, False, True),
        "(a) model alone, bf16 autocast, NCHW": model_alone(cfg, True, False),
        "(a) model alone, bf16 autocast, channels-last": model_alone(cfg, True, True),
        "(b) train.py loop, batch 128": train_loop(argv, data),
        "(b) train.py loop, batch 128, float32 NCHW": train_loop(argv, data, "--amp=False", "--channels_last=False"),
        "(c) original-style loop (PIL, DataLoader, float32 NCHW)": original_style(cfg),
    }
    if with_compile:
        candidates["(b) train.py loop, batch 128, COMPILE"] = train_loop(argv, data, "--compile=True")
    best = {name: 0.0 for name in candidates}
    for name, run in candidates.items():  # warm-up: allocations, worker start, compilation
        run()
    for _ in range(ROUNDS):
        for name, run in candidates.items():
            best[name] = max(best[name], images_per_second(run))
    large = {
        "(b) train.py loop, batch 8192, one batch per step": ("--batch_size=8192",),
        "(b) train.py loop, batch 8192, MICRO_BATCH_SIZE=128": ("--batch_size=8192", "--micro_batch_size=128"),
        "(b) train.py loop, batch 8192, MICRO_BATCH_SIZE=128, GHOST_BN": ("--batch_size=8192", "--micro_batch_size=128",
                                                                          "--ghost_bn=True"),
    }
    for name, overrides in large.items():
        best[name] = images_per_second(train_loop(argv, data, *overrides, steps=2))
    for processes in (1, 2):
        best[f"(d) torchrun, {processes} process(es), gloo"] = torchrun_throughput(argv, processes, 6400)

    ceiling = best["(a) model alone, bf16 autocast, channels-last"]
    original = best["(c) original-style loop (PIL, DataLoader, float32 NCHW)"]
    print("| loop | images/s | / ceiling (a, bf16 channels-last) | / original-style (c) |\n|---|---|---|---|")
    for name, rate in best.items():
        print(f"| {name} | {rate:.0f} | {rate / ceiling:.2f} | {rate / original:.2f} |")
    layer_statistics_overhead(argv, data, cfg.LAYER_STATS_EVERY)


def layer_statistics_overhead(argv, data, default_every):
    """Throughput with the layer statistics at the default interval and at every step, against
    off: STATS_ROUNDS interleaved rounds of each, medians (the differences are smaller than the
    round-to-round noise of the table above, which keeps the best of 2)."""
    loops = {"off": train_loop(argv, data, "--layer_stats_every=0"),
             f"every {default_every} steps (default)": train_loop(argv, data, f"--layer_stats_every={default_every}"),
             "every step": train_loop(argv, data, "--layer_stats_every=1")}
    rates = {name: [] for name in loops}
    for run in loops.values():
        run()
    for _ in range(STATS_ROUNDS):
        for name, run in loops.items():
            rates[name].append(images_per_second(run))
    off = statistics.median(rates["off"])
    print(f"\ntrain.py loop, batch 128, layer statistics, median of {STATS_ROUNDS} interleaved rounds of {STEPS} steps:")
    print("| layer statistics | images/s | / off |\n|---|---|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.0f} | {statistics.median(values) / off:.3f} |")


if __name__ == "__main__":
    run(main, __doc__, sys.argv[1:])
