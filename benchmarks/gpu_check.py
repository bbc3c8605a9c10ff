"""The GPU check: one prepared command for the few minutes a GPU machine is lent.

    python benchmarks/gpu_check.py --archive=PATH/cifar10-jpg.tar.gz --out=DIR [--dry-run]
    python benchmarks/gpu_check.py --data_dir=PATH/cifar10 --out=DIR [--dry-run]

Fetches nothing from the network. In order, each part timed and recorded even if another fails:
1. the machine: GPU, its memory, torch, CUDA, cuDNN, timm;
2. the data: unpacks the archive into a temporary folder (or uses --data_dir);
3. optimizer.step() on torchvision ResNet-50's parameters (channels-last) on the GPU, median of
   STEPS CUDA-event-timed steps in random order: LARS multi-tensor (the default, which reads its
   step sizes once per step), capturable (all on the device) and single-tensor, torch.optim.SGD
   foreach and fused, timm's Lars where installed;
4. configs/attempt2.py (ResNet-50, AMP float16) for the first 2 of its 200 epochs at batch
   128 and 8192, at batch 128's LRs (TIMING_LR): SGD and LARS eager, and LARS with CUDA_GRAPHS;
   ms per step in epoch 2 (epoch 1 pays for cuDNN's autotuning and the compiler), images/s,
   LARS / SGD, graphs / eager, peak GPU memory, and each epoch's training loss, so that an epoch
   cut short by a non-finite loss is reported as diverged instead of timed;
5. ghost BN (GHOST_BN) against the micro-batch loop at batch 8192, BN statistics per 128 images,
   on the 200-epoch study's ResNet-20 with LARS: ms per step and the first loss of each;
6. the CUDA tests (`pytest -m cuda -v`), with a time limit for the part and one per test
   ($TEST_TIME_LIMIT, tests/conftest.py), their output streamed to DIR/tests.log so that a test
   that hangs is named there. The CPU suite is CI's;
7. last, with the rest of the check's budget (BUDGET_SECONDS in all): one whole 200-epoch run of
   configs/study200.py's batch-128 LARS cell (seed 0, the LR its CPU run had) with CUDA_GRAPHS,
   its time to train and final validation and test top-1 beside the CPU run's from
   results/study200/results.json; stopped by the budget, it reports the epochs it finished and
   its seconds per epoch.
It writes DIR/report.md and DIR/raw.json after every part, so a run stopped at its time limit
still returns what it measured, and removes the data it unpacked when it ends.

--dry-run does all of it on the CPU at toy sizes (ResNet-20, 256 images, batch 32 and 64, the
CUDA tests only, which skip; the "CUDA graphs" rows compiled with a backend that runs the traced
graphs as they are, the 200-epoch run as 2 epochs without graphs): a test runs it, so the script
cannot rot between GPU sessions.
Works with the PyTorch on the GPU machine (2.11) as with this project's (2.14.1).
"""

import argparse
import json
import math
import os
import platform
import shutil
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
import trainer as trainer_module  # noqa: E402
from checkpoints import checkpoint_path, load_checkpoint  # noqa: E402
from config import OPERATIONAL_SETTINGS  # noqa: E402
from trainer import Trainer  # noqa: E402
from utils import EXIT_BAD_INPUT, Process, fail, machines_so_far  # noqa: E402

ATTEMPT2 = os.path.join(ROOT, "configs", "attempt2.py")
CPU_SWEEP = os.path.join(ROOT, "configs", "cpu_sweep.py")  # the 200-epoch study's model and protocol
HYPER = {"lr": 0.1, "momentum": 0.9}
# Batch 128's schedule at every batch size. A step's work does not depend on its LR, but a run
# that diverges has no steps to time: at batch 8192, attempt 2's own LRs (3.2 rising to 6.4)
# drove both SGD and LARS (trust coefficient 0.1) to a non-finite loss at the first step of
# epoch 2 on an H100 (results/gpu_check/diverged_at_8192/report.md), as they end at chance in
# the CPU sweep.
TIMING_LR = ["--lr=0.05", "--end_lr=1e-5"]
PER_TEST_SECONDS = 90  # a CUDA test that hangs fails after this, named in tests.log
BUDGET_SECONDS = 520  # the whole check: under the 9 minutes that fit one loan of the GPU machine with its start
STUDY200 = [os.path.join("configs", name) for name in ("cpu_sweep.py", "large_batch.py", "recipe.py", "study200.py")]
STUDY200_RESULTS = os.path.join(ROOT, "results", "study200", "results.json")
STUDY200_CELL = {"batch_size": 128, "with_lars": True, "recipe": "no_zero_init", "seed": 0}


class Check:
    """The check's sizes: the real ones on a GPU, toy ones for --dry-run on the CPU."""

    def __init__(self, dry_run):
        self.dry_run = dry_run
        self.device = torch.device("cpu" if dry_run else "cuda")
        self.tests_timeout = 120 if dry_run else 200
        self.steps = 3 if dry_run else 50
        self.epochs = 2
        self.budget = 600 if dry_run else BUDGET_SECONDS - 15  # the last part stops here
        self.batch_sizes = (32, 64) if dry_run else (128, 8192)
        self.training = (["--model=resnet20", "--train_subset=256", "--num_threads=2"] if dry_run else [])
        self.ghost_batch = (64, 16) if dry_run else (8192, 128)  # (batch, the images BN normalises together)
        # On the CPU, CUDA_GRAPHS's compiled step runs through a backend that executes the traced
        # graphs as they are: its code is exercised in seconds, not timed.
        self.graph_compile = {"backend": "eager"} if dry_run else trainer_module.CUDA_GRAPH_COMPILE
        # The 200-epoch run: on the CPU, two epochs of the toy folder, without graphs (refused there).
        self.run200 = (["--validation_size=30", "--num_epochs=2", "--warmup_epochs=0", "--eval_every=1",
                        "--cuda_graphs=False", "--num_threads=2"] if dry_run else ["--cuda_graphs=True"])


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


def tests(check, data_dir, out, seconds_left):
    """The CUDA tests, verbose, streamed to out/tests.log: a test that hangs is the last one named
    there, and the limit stops it without losing what ran before."""
    command = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-m", "cuda", "--durations=5"]
    log_path = os.path.join(out, "tests.log")
    # TEST_TIME_LIMIT: one test's limit (tests/conftest.py), well under the part's
    env = {**os.environ, "CIFAR10_DIR": data_dir, "TEST_TIME_LIMIT": str(PER_TEST_SECONDS)}
    limit = max(1, min(check.tests_timeout, seconds_left))
    with open(log_path, "w") as log:
        try:
            status = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=limit,
                                    env=env, stdin=subprocess.DEVNULL).returncode
        except subprocess.TimeoutExpired:
            status = f"stopped after {limit:.0f} s"
    with open(log_path) as log:
        lines = log.read().strip().splitlines()
    summary = next((line for line in reversed(lines) if line.startswith("=")), "")
    return {"command": " ".join(command[1:]), "exit_status": status, "summary": summary.strip("= "),
            "tail": "\n".join(lines[-40:])}


def optimizer_steps(check):
    """Median milliseconds per step of each optimizer, each on its own copy of ResNet-50's parameters."""
    model, params = model_and_parameter_copies("resnet50_imagenet", check.device)

    makers = {
        "LARS multi-tensor (default)": lambda: LARS(params(), weight_decay=5e-4, trust_coef=0.02, **HYPER),
        "LARS multi-tensor, capturable": lambda: LARS(params(), weight_decay=5e-4, trust_coef=0.02, capturable=True,
                                                      **HYPER),
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
    """attempt2.py's first epochs per batch size: SGD and LARS eager, then LARS with CUDA graphs."""
    data = training_data(data_dir, num_workers=min(8, os.cpu_count() or 1))
    trainer_module.CUDA_GRAPH_COMPILE = check.graph_compile
    rows = []
    for batch in check.batch_sizes:
        for with_lars, graphs in ((False, False), (True, False), (True, True)):
            cfg = load_config([ATTEMPT2, f"--batch_size={batch}", f"--with_lars={with_lars}",
                               *TIMING_LR, "--amp=True", f"--device={check.device.type}",
                               f"--data_dir={data_dir}", f"--cuda_graphs={graphs}", *check.training])
            trainer = Trainer(cfg, Process(), check.device, subset(data, cfg.TRAIN_SUBSET))
            if check.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(check.device)
            # The first epochs of a 200-epoch run, its warm-up's length unchanged.
            losses, seconds = zip(*(trainer.train_epoch() for _ in range(check.epochs)))
            rows.append(training_row(cfg, trainer.steps_per_epoch, losses, seconds, check.device))
            save(rows)
            del trainer
    for row in rows:
        same_batch = {(r["optimizer"], r["cuda_graphs"]): r["ms_per_step"] for r in rows
                      if r["batch_size"] == row["batch_size"]}
        row["lars_over_sgd"] = (_ratio(row["ms_per_step"], same_batch.get(("SGD", False)))
                                if row["optimizer"] == "LARS" and not row["cuda_graphs"] else None)
        row["graphs_over_eager"] = (_ratio(row["ms_per_step"], same_batch.get((row["optimizer"], False)))
                                    if row["cuda_graphs"] else None)
    return rows


def _ratio(ms, baseline_ms):
    return round(ms / baseline_ms, 3) if ms and baseline_ms else None


def ghost_bn(check, data_dir):
    """The 200-epoch study's model at its large batch, BN statistics per micro-batch either way:
    the micro-batch loop against ghost BN's one pass (GHOST_BN), LARS, the same batch for both.
    Median ms per step over interleaved steps, and each one's first loss (the same weights and
    images: equal but for float16 round-off)."""
    batch, micro = check.ghost_batch
    data = training_data(data_dir, num_workers=min(8, os.cpu_count() or 1))
    trainers = {}
    for ghost in (False, True):
        cfg = load_config([CPU_SWEEP, f"--batch_size={batch}", f"--micro_batch_size={micro}", "--with_lars=True",
                           f"--ghost_bn={ghost}", "--amp=True", f"--device={check.device.type}", "--layer_stats_every=0",
                           f"--data_dir={data_dir}", *check.training])
        trainers[ghost] = Trainer(cfg, Process(), check.device, subset(data, cfg.TRAIN_SUBSET))
    images, labels = next(trainers[False].batches.train_epoch(0, 0, batch))
    first_loss = {ghost: trainer.train_step(images, labels).item() for ghost, trainer in trainers.items()}
    steps = {ghost: (lambda t=trainer: t.train_step(images, labels)) for ghost, trainer in trainers.items()}
    timer = cuda_time if check.device.type == "cuda" else None
    ms = {ghost: s * 1e3 for ghost, s in time_steps(steps, check.steps, timer).items()}
    return {"batch_size": batch, "micro_batch_size": micro, "model": cfg.MODEL,
            "ms_per_step": {"micro-batch loop": round(ms[False], 2), "ghost BN": round(ms[True], 2)},
            "ghost_over_loop": round(ms[True] / ms[False], 3),
            "first_loss": {"micro-batch loop": round(first_loss[False], 5), "ghost BN": round(first_loss[True], 5)}}


def training_row(cfg, steps_per_epoch, losses, seconds, device):
    """One (batch, optimizer)'s times. A non-finite loss ends an epoch early (train.py stops the
    run there), so a diverged run has no time per step: its short epoch would read as speed."""
    diverged = not all(math.isfinite(loss) for loss in losses)
    ms_per_step = None if diverged else 1e3 * sum(seconds[1:]) / (steps_per_epoch * (len(seconds) - 1))
    return {"batch_size": cfg.BATCH_SIZE, "optimizer": "LARS" if cfg.WITH_LARS else "SGD", "model": cfg.MODEL,
            "cuda_graphs": cfg.CUDA_GRAPHS,
            "steps_per_epoch": steps_per_epoch, "epoch_seconds": [round(s, 2) for s in seconds],
            "losses": [round(loss, 4) for loss in losses], "diverged": diverged,
            "ms_per_step": round(ms_per_step, 2) if ms_per_step else None,
            "images_per_second": round(cfg.BATCH_SIZE * 1e3 / ms_per_step, 1) if ms_per_step else None,
            "peak_memory_gib": (round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                                if device.type == "cuda" else None)}


def study200_cpu_run():
    """The CPU run of STUDY200_CELL recorded in results/study200/results.json (its best peak LR on
    validation among seed-0 grid runs, as the sweep chose it)."""
    with open(STUDY200_RESULTS) as f:
        cells = json.load(f)["cells"]
    runs = [c for c in cells if c["status"] == "finished" and c["role"] == "grid"
            and all(c[k] == v for k, v in STUDY200_CELL.items())]
    return max(runs, key=lambda c: c["final_val_top1"])


def run200(check, data_dir, out, seconds_left):
    """One whole 200-epoch run of the study's batch-128 LARS cell, as its CPU run was set, plus
    CUDA_GRAPHS; stopped when ``seconds_left`` runs out, it reports the epochs it finished."""
    cpu = study200_cpu_run()
    checkpoint_dir = tempfile.mkdtemp(prefix="gpu-check-run200-")
    command = [sys.executable, "train.py", *STUDY200, f"--batch_size={cpu['batch_size']}",
               f"--with_lars={cpu['with_lars']}", f"--recipe={cpu['recipe']}", f"--seed={cpu['seed']}",
               f"--lr={cpu['hyperparams']['LR']!r}", "--amp=True", f"--device={check.device.type}",
               f"--data_dir={data_dir}", f"--checkpoint_dir={checkpoint_dir}", *check.run200]
    cfg = load_config([os.path.join(ROOT, a) if a in STUDY200 else a for a in command[2:]])
    differences = sorted(k for k, v in vars(cfg).items()
                         if k not in OPERATIONAL_SETTINGS and cpu["hyperparams"].get(k, v) != v)
    with open(os.path.join(out, "run200.log"), "w") as log:
        try:
            status = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    timeout=max(1, seconds_left)).returncode
        except subprocess.TimeoutExpired:
            status = f"stopped after {max(1, seconds_left):.0f} s, the check's budget"
    try:
        saved = load_checkpoint(checkpoint_path(cfg))
    except Exception:
        saved = {"history": []}
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    evaluated = [r for r in saved["history"] if "test_acc" in r]
    last = evaluated[-1] if evaluated else {}
    return {"command": " ".join(["python", *command[1:]]).replace(data_dir, "DATA"), "exit_status": status,
            "settings_unlike_the_cpu_run": differences, "epochs_done": len(saved["history"]),
            "time_to_train": round(saved["history"][-1]["time"], 1) if saved["history"] else None,
            "seconds_per_epoch": round(saved["history"][-1]["time"] / len(saved["history"]), 2) if saved["history"] else None,
            "final": {"epoch": last.get("epoch"), "val_top1": last.get("val_acc"), "test_top1": last.get("test_acc")},
            "cpu": {"epochs": cpu["epochs_done"], "time_to_train": round(cpu["time_to_train"]), "peak_lr": cpu["peak_lr"],
                    "val_top1": cpu["final_val_top1"], "test_top1": cpu["final_top1"], "machines": machines_so_far(cpu)}}


# --- the report ------------------------------------------------------------------------------

def report(raw):
    m = raw.get("machine", {})
    lines = ["# GPU check", "", f"Command: `{raw['command']}`, {raw['date']}", "",
             f"Machine: {m.get('gpu', 'no GPU (dry run)')}"
             + (f", {m['gpu_memory_gib']} GiB, {m['gpus']} GPU(s), CUDA {m['cuda']}, cuDNN {m['cudnn']}"
                if "gpu" in m else "")
             + f"; {m.get('cpu_cores')} CPU cores; Python {m.get('python')}, torch {m.get('torch')}, "
               f"timm {m.get('timm') or 'not installed'}.", ""]
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
                  f"At batch 128's LRs ({' '.join(TIMING_LR)}) at every batch size. Epoch 1 pays for cuDNN's "
                  "autotuning and, with CUDA graphs, for the compiler; the times per step are those of the later epochs.",
                  "", "| batch | optimizer | CUDA graphs | model | steps/epoch | epoch seconds | training loss per epoch "
                  "| ms per step | images/s | LARS / SGD | graphs / eager | peak GPU memory, GiB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in raw["training"]:
            lines.append(f"| {r['batch_size']} | {r['optimizer']} | {'yes' if r.get('cuda_graphs') else 'no'} | "
                         f"{r['model']} | {r['steps_per_epoch']} | "
                         f"{', '.join(map(str, r['epoch_seconds']))} | {', '.join(map(str, r['losses']))} | "
                         f"{r['ms_per_step'] or 'diverged'} | {r['images_per_second'] or '-'} | "
                         f"{r.get('lars_over_sgd') or ''} | {r.get('graphs_over_eager') or ''} | "
                         f"{r['peak_memory_gib'] if r['peak_memory_gib'] is not None else '-'} |")
        lines.append("")
    if "ghost_bn" in raw:
        b = raw["ghost_bn"]
        lines += ["## Ghost BN against micro-batches", "",
                  f"{b['model']} at batch {b['batch_size']}, BN statistics per {b['micro_batch_size']} images, LARS, AMP: "
                  f"median ms per step over interleaved steps, and the first step's loss on the same batch.", "",
                  "| path | ms per step | first loss |", "|---|---|---|"]
        lines += [f"| {path} | {ms} | {b['first_loss'][path]} |" for path, ms in b["ms_per_step"].items()]
        lines += ["", f"Ghost BN / micro-batch loop: {b['ghost_over_loop']}.", ""]
    if "tests" in raw:
        t = raw["tests"]
        lines += ["## CUDA tests", "", f"`{t['command']}`: exit status {t['exit_status']}, {t['summary']} "
                  "(the whole output: tests.log)", ""]
    if "run200" in raw:
        r, cpu = raw["run200"], raw["run200"]["cpu"]
        cpu_names = " then ".join(m["cpu"] for m in cpu["machines"]) or "CPU"
        lines += ["## 200 epochs of the study's batch-128 LARS cell", "",
                  f"`{r['command']}` (log: run200.log): exit status {r['exit_status']}; settings unlike the CPU "
                  f"run's: {', '.join(r['settings_unlike_the_cpu_run']) or 'none'}.", "",
                  "| run | epochs | time to train, s | validation top-1 | test top-1 |", "|---|---|---|---|---|",
                  f"| this device | {r['epochs_done']} | {r['time_to_train']} | {r['final']['val_top1']} | "
                  f"{r['final']['test_top1']} |",
                  f"| this device, {r['seconds_per_epoch']} s an epoch x {cpu['epochs']} (extrapolated) | | "
                  f"{round(r['seconds_per_epoch'] * cpu['epochs']) if r['seconds_per_epoch'] else '-'} | | |",
                  f"| CPU run (results/study200, peak LR {cpu['peak_lr']}, {cpu_names}) | "
                  f"{cpu['epochs']} | {cpu['time_to_train']} | {cpu['val_top1']} | {cpu['test_top1']} |", ""]
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
        fail("no CUDA device: run it on a GPU machine, or with --dry-run", EXIT_BAD_INPUT)
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
    started = time.perf_counter()

    def seconds_left():
        return check.budget - (time.perf_counter() - started)

    parts = [("machine", lambda: machine(check)),
             ("data", lambda: data_dir or unpack(args.archive)),
             ("optimizer", lambda: optimizer_steps(check)),
             ("training", lambda: training(check, raw["data"], lambda rows: save("training", rows))),
             ("ghost_bn", lambda: ghost_bn(check, raw["data"])),
             ("tests", lambda: tests(check, raw["data"], args.out, seconds_left())),
             ("run200", lambda: run200(check, raw["data"], args.out, seconds_left()))]
    try:
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
    finally:
        if args.archive and raw.get("data"):  # the unpacked copy, in the system's temporary folder
            shutil.rmtree(os.path.dirname(raw["data"]), ignore_errors=True)
    print(report(raw))
    return 1 if raw["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
