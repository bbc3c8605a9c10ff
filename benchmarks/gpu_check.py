"""The GPU check: one prepared command for the few minutes a GPU machine is lent.

    python benchmarks/gpu_check.py --archive=PATH/cifar10-jpg.tar.gz --out=DIR [--dry-run]
    python benchmarks/gpu_check.py --data_dir=PATH/cifar10 --out=DIR [--dry-run]

Fetches nothing from the network. In order, each part timed and recorded even if another fails:
1. the machine: GPU, its memory, torch, CUDA, cuDNN, timm;
2. the data: unpacks the archive into a temporary folder (or uses --data_dir);
3. the tests: the CUDA tests and the fast suite (`pytest -m "cuda or not slow"`);
4. optimizer.step() on torchvision ResNet-50's parameters (channels-last) on the GPU, median of
   STEPS CUDA-event-timed steps in random order: LARS multi-tensor (the default) and
   single-tensor, torch.optim.SGD foreach and fused, timm's Lars where installed;
5. configs/attempt2.py (ResNet-50, AMP float16) for 2 epochs at batch 128 and 8192, SGD and LARS:
   the second epoch's time (the first pays for cuDNN's autotuning), images/s, LARS / SGD epoch
   time, peak GPU memory.
It writes DIR/report.md and DIR/raw.json after every part, so a run stopped at its time limit
still returns what it measured. About 6 minutes on one H100 (budgeted: 8).

--dry-run does all of it on the CPU at toy sizes (ResNet-20, 256 images, batch 32 and 64, the
CUDA tests only, which skip): a test runs it, so the script cannot rot between GPU sessions.
Works with the PyTorch on the GPU machine (2.11) as with this project's (2.14.1).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from config import load_config  # noqa: E402
from data import subset, training_data  # noqa: E402
from lars import LARS  # noqa: E402
from optimizer_step import model_and_parameter_copies, time_steps  # noqa: E402  (beside this file)
from train import Trainer  # noqa: E402
from utils import Process  # noqa: E402

ATTEMPT2 = os.path.join(ROOT, "configs", "attempt2.py")
HYPER = {"lr": 0.1, "momentum": 0.9}


class Check:
    """The check's sizes: the real ones on a GPU, toy ones for --dry-run on the CPU."""

    def __init__(self, dry_run):
        self.dry_run = dry_run
        self.device = torch.device("cpu" if dry_run else "cuda")
        self.tests = ["-m", "cuda"] if dry_run else ["-m", "cuda or not slow"]
        self.tests_timeout = 120 if dry_run else 300
        self.steps = 3 if dry_run else 50
        self.batch_sizes = (32, 64) if dry_run else (128, 8192)
        self.training = (["--model=resnet20", "--train_subset=256", "--num_threads=2"] if dry_run else [])


# --- the parts ------------------------------------------------------------------------------

def machine(check):
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_cores": os.cpu_count(),
            "device": str(check.device)}
    if check.device.type == "cuda":
        props = torch.cuda.get_device_properties(check.device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    gpus=torch.cuda.device_count(), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    try:
        import timm
        info["timm"] = timm.__version__
    except ImportError:
        info["timm"] = None
    return info


def unpack(archive):
    """The archive's cifar10/ folder, unpacked into a temporary folder outside the repository."""
    target = tempfile.mkdtemp(prefix="gpu-check-data-")
    with tarfile.open(archive) as tar:
        tar.extractall(target, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return os.path.join(target, "cifar10")


def tests(check, data_dir):
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *check.tests]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=check.tests_timeout,
                            env={**os.environ, "CIFAR10_DIR": data_dir}, stdin=subprocess.DEVNULL)
    lines = result.stdout.strip().splitlines()
    return {"command": " ".join(command[1:]), "exit_status": result.returncode,
            "summary": lines[-1] if lines else "", "tail": "\n".join(lines[-40:]) + result.stderr[-2000:]}


def optimizer_steps(check):
    """Median milliseconds per step of each optimizer, each on its own copy of ResNet-50's parameters."""
    model, params = model_and_parameter_copies("resnet50_imagenet", check.device)

    makers = {
        "LARS multi-tensor (default)": lambda: LARS(params(), weight_decay=5e-4, trust_coef=0.02, **HYPER),
        "LARS single-tensor": lambda: LARS(params(), weight_decay=5e-4, trust_coef=0.02, foreach=False, **HYPER),
        "SGD foreach": lambda: torch.optim.SGD(params(), weight_decay=5e-4, foreach=True, **HYPER),
        "SGD fused": lambda: torch.optim.SGD(params(), weight_decay=5e-4, fused=True, **HYPER),
        "timm Lars": timm_lars(params),
    }
    steps, unavailable = {}, {}
    for name, make in makers.items():
        try:
            optimizer = make()
            optimizer.step()  # fails here if unavailable: fused SGD on an older CPU build, timm missing
            steps[name] = optimizer.step
        except Exception as e:
            unavailable[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    timer = cuda_time if check.device.type == "cuda" else None
    medians = {name: s * 1e3 for name, s in time_steps(steps, check.steps, timer).items()}
    sgd = min((ms for name, ms in medians.items() if name.startswith("SGD")), default=None)
    return {"parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
            "tensors": len(list(model.parameters())), "steps": check.steps,
            "ms": {k: round(v, 3) for k, v in medians.items()},
            "ratio_to_fastest_sgd": {k: round(v / sgd, 2) for k, v in medians.items()} if sgd else {},
            "unavailable": unavailable}


def timm_lars(params):
    def make():
        from timm.optim import Lars

        return Lars(params(), weight_decay=5e-4, trust_coeff=0.02, **HYPER)
    return make


def cuda_time(step):
    """Seconds of one call on the GPU, between two CUDA events."""
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    step()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3


def training(check, data_dir, save):
    """attempt2.py's two epochs per (batch, optimizer), SGD then LARS at each batch size."""
    data = training_data(data_dir, num_workers=min(8, os.cpu_count() or 1))
    rows = []
    for batch in check.batch_sizes:
        for with_lars in (False, True):
            cfg = load_config([ATTEMPT2, f"--batch_size={batch}", f"--with_lars={with_lars}", "--num_epochs=2",
                               "--warmup_epochs=1", "--amp=True", f"--device={check.device.type}",
                               f"--data_dir={data_dir}", *check.training])
            trainer = Trainer(cfg, Process(), check.device, subset(data, cfg.TRAIN_SUBSET))
            if check.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(check.device)
            seconds = [trainer.train_epoch()[1] for _ in range(cfg.NUM_EPOCHS)]
            rows.append({"batch_size": batch, "optimizer": "LARS" if with_lars else "SGD", "model": cfg.MODEL,
                         "steps_per_epoch": trainer.steps_per_epoch, "epoch_seconds": [round(s, 2) for s in seconds],
                         "images_per_second": round(trainer.steps_per_epoch * batch / seconds[-1], 1),
                         "peak_memory_gib": (round(torch.cuda.max_memory_allocated(check.device) / 2**30, 2)
                                             if check.device.type == "cuda" else None)})
            save(rows)
            del trainer
    for row in rows:
        sgd = next(r for r in rows if r["batch_size"] == row["batch_size"] and r["optimizer"] == "SGD")
        row["lars_over_sgd"] = (round(row["epoch_seconds"][-1] / sgd["epoch_seconds"][-1], 3)
                                if row["optimizer"] == "LARS" else None)
    return rows


# --- the report ------------------------------------------------------------------------------

def report(raw):
    m = raw.get("machine", {})
    lines = ["# GPU check", "", f"Command: `{raw['command']}`, {raw['date']}", "",
             f"Machine: {m.get('gpu', 'no GPU (dry run)')}"
             + (f", {m['gpu_memory_gib']} GiB, {m['gpus']} GPU(s), CUDA {m['cuda']}, cuDNN {m['cudnn']}"
                if "gpu" in m else "")
             + f"; {m.get('cpu_cores')} CPU cores; Python {m.get('python')}, torch {m.get('torch')}, "
               f"timm {m.get('timm') or 'not installed'}.", ""]
    if "tests" in raw:
        t = raw["tests"]
        lines += ["## Tests", "", f"`{t['command']}`: exit status {t['exit_status']}, {t['summary']}", ""]
    if "optimizer" in raw:
        o = raw["optimizer"]
        lines += ["## optimizer.step()", "",
                  f"torchvision ResNet-50, {o['parameters_millions']}M parameters in {o['tensors']} tensors, "
                  f"channels-last, median of {o['steps']} steps in random order.", "",
                  "| implementation | ms per step | ratio to the fastest SGD |", "|---|---|---|"]
        lines += [f"| {name} | {ms:.3f} | {o['ratio_to_fastest_sgd'].get(name, '')} |" for name, ms in o["ms"].items()]
        lines += [f"| {name} | unavailable: {why} | |" for name, why in o["unavailable"].items()] + [""]
    if "training" in raw:
        lines += ["## Training: configs/attempt2.py, AMP float16", "",
                  "Epoch 1 pays for cuDNN's autotuning; images/s and the ratio are epoch 2's.", "",
                  "| batch | optimizer | model | steps/epoch | epoch 1, s | epoch 2, s | images/s | LARS / SGD "
                  "| peak GPU memory, GiB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in raw["training"]:
            first, last = r["epoch_seconds"][0], r["epoch_seconds"][-1]
            lines.append(f"| {r['batch_size']} | {r['optimizer']} | {r['model']} | {r['steps_per_epoch']} | {first} | "
                         f"{last} | {r['images_per_second']} | {r.get('lars_over_sgd') or ''} | "
                         f"{r['peak_memory_gib'] if r['peak_memory_gib'] is not None else '-'} |")
        lines.append("")
    lines += [f"Part times, s: {', '.join(f'{k} {v}' for k, v in raw['seconds'].items())}."]
    if raw["errors"]:
        lines += ["", "## Errors", ""] + [f"- {part}: `{error}`" for part, error in raw["errors"].items()]
    return "\n".join(lines) + "\n"


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--archive", help="cifar10-jpg.tar.gz, unpacked into a temporary folder")
    source.add_argument("--data_dir", help="an unpacked cifar10/ folder (train/ and test/)")
    parser.add_argument("--out", required=True, help="the folder for report.md and raw.json")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, at toy sizes")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run it on a GPU machine, or with --dry-run")
    check = Check(args.dry_run)
    os.makedirs(args.out, exist_ok=True)
    raw = {"command": " ".join(["python", "benchmarks/gpu_check.py", *argv]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": {}, "errors": {}}

    def save(part=None, value=None):
        if part is not None:
            raw[part] = value
        with open(os.path.join(args.out, "raw.json"), "w") as f:
            json.dump(raw, f, indent=1)
        with open(os.path.join(args.out, "report.md"), "w") as f:
            f.write(report(raw))

    data_dir = args.data_dir
    parts = [("machine", lambda: machine(check)),
             ("data", lambda: data_dir or unpack(args.archive)),
             ("tests", lambda: tests(check, raw["data"])),
             ("optimizer", lambda: optimizer_steps(check)),
             ("training", lambda: training(check, raw["data"], lambda rows: save("training", rows)))]
    for part, run in parts:
        start = time.perf_counter()
        try:
            save(part, run())
        except Exception as e:
            raw["errors"][part] = f"{type(e).__name__}: {e}".splitlines()[0]
            print(traceback.format_exc(), file=sys.stderr)
            if part == "data":
                break
        raw["seconds"][part] = round(time.perf_counter() - start, 1)
        save()
        print(f"gpu_check: {part} done in {raw['seconds'][part]} s", flush=True)
    print(report(raw))
    return 1 if raw["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
