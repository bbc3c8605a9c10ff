"""Shared by train.py, val.py and sweep.py: devices and processes, signals and exit statuses,
files written atomically, reporting."""

import itertools
import math
import os
import platform
import signal
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

EXIT_BAD_INPUT = 2  # a setting, the data or the checkpoint directory cannot be used
EXIT_DIVERGED = 3  # the loss became non-finite; the checkpoint records it
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), as a shell reports it
EXIT_TERMINATED = 143  # SIGTERM, what a cluster scheduler sends before it kills a preempted job


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the process is, so that it stops as Ctrl-C stops it."""


def handle_interrupts():
    """From now on Ctrl-C raises KeyboardInterrupt (Python's own handler, which start_command
    replaced while torch loaded) and SIGTERM raises Terminated, a KeyboardInterrupt: the code that
    handles Ctrl-C handles it too, and ``interrupt_exit_status`` tells the two apart."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job's stays ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_terminated)


def _raise_terminated(signum, frame):
    raise Terminated()


def interrupt_exit_status(error):
    return EXIT_TERMINATED if isinstance(error, Terminated) else EXIT_INTERRUPTED


def interrupt_name(error):
    return "terminated (SIGTERM)" if isinstance(error, Terminated) else "interrupted"


def fail(message, status):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


# --- devices and processes -----------------------------------------------------------------

@dataclass
class Process:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1


def process_from_env():
    """This process's place in a torchrun launch (rank 0 of 1 without torchrun)."""
    env = os.environ
    return Process(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))


def init_distributed(process, device):
    """Join the process group: nccl on CUDA, gloo on the CPU."""
    if process.distributed:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=process.rank, world_size=process.world_size,
                                device_id=device if device.type == "cuda" else None)


class DeviceError(ValueError):
    """DEVICE names a device this machine does not have."""


def pick_device(name, process):
    """The torch.device of DEVICE for this process ("cuda": its local rank's GPU); DeviceError
    for CUDA on a machine without it."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"DEVICE = {name!r} but CUDA is not available; use 'auto' or 'cpu'")
    if name == "cuda":
        name = f"cuda:{process.local_rank}"
    return torch.device(name)


def describe_machine(device, world_size):
    """Where a run ran, as plain values for checkpoints and results."""
    if device.type == "cuda":
        accelerator = torch.cuda.get_device_name(device)
    else:
        accelerator = "none"
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "device": str(device),
            "accelerator": accelerator, "processes": world_size, "torch": str(torch.__version__),
            "python": platform.python_version()}


def _cpu_model():
    """The CPU's name, with its family and model numbers where Linux gives them: CPUs sold under
    one name (a cloud's "AMD EPYC") differ in speed by a factor of two."""
    try:
        with open("/proc/cpuinfo") as f:
            first_cpu = itertools.takewhile(str.strip, f)  # up to the blank line after it
            fields = dict(_cpuinfo_field(line) for line in first_cpu if ":" in line)
    except OSError:
        return platform.processor()
    name = fields.get("model name") or platform.processor()
    if "cpu family" in fields and "model" in fields:
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


def _cpuinfo_field(line):
    key, value = line.split(":", 1)
    return key.strip(), value.strip()


def machines_so_far(record):
    """The machines a run trained on, from its checkpoint or its results cell: each machine with
    ``from_epoch``, the first epoch it trained. A record written before runs listed their
    machines names only the one that saved it last, from an epoch unknown (None)."""
    if record.get("machines"):
        return record["machines"]
    return [{"from_epoch": None, **record["machine"]}] if record.get("machine") else []


def add_machine(machines, machine, from_epoch):
    """``machines`` with ``machine`` added from ``from_epoch`` on, unless it is the last one."""
    if machines and without_epoch(machines[-1]) == machine:
        return machines
    return [*machines, {"from_epoch": from_epoch, **machine}]


def without_epoch(machine):
    return {key: value for key, value in machine.items() if key != "from_epoch"}


def set_threads(num_threads):
    """CPU threads per process; 0 shares the cores among the processes on this node
    (torchrun would otherwise leave every process with one thread)."""
    if num_threads == 0:
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        num_threads = max(1, (os.cpu_count() or 1) // local_processes)
    torch.set_num_threads(num_threads)


# --- checkpoints ---------------------------------------------------------------------------

def write_atomically(path, write, mode="wb"):
    """Call ``write(file)`` on a temporary file in the same directory, flush it to disk, then
    rename it over ``path``: a reader sees the old file or the new one, never a partial one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# --- reporting -----------------------------------------------------------------------------

def plural(count, noun):
    return f"{count} {noun}{'' if count == 1 else 's'}"


def evaluated(history):
    """The history's rows that have accuracies: with EVAL_EVERY > 1 the epochs in between have none."""
    return [row for row in history if "test_acc" in row]


def format_history(history):
    """The per-epoch table; a run with a validation hold-out gets its column before the test's,
    and an epoch without an evaluation (EVAL_EVERY) shows "-"."""
    validation = any("val_acc" in row for row in history)
    lines = ["epoch | " + ("val top-1 % | test " if validation else "") + "top-1 % | train loss | time to train",
             "----- | " + ("----------- | -----" if validation else "") + "------- | ---------- | -------------"]
    for row in history:
        val = f"{format_accuracy(row.get('val_acc')):>11} | " if validation else ""
        lines.append(f"{row['epoch']:5d} | {val}{format_accuracy(row.get('test_acc')):>{12 if validation else 7}} | "
                     f"{row['train_loss']:10.4f} | {format_duration(row['time'])}")
    return "\n".join(lines)


def format_accuracy(accuracy):
    """Two decimals; "nan" for a diverged epoch, "-" for one that was not evaluated (None)."""
    return "-" if accuracy is None else "nan" if math.isnan(accuracy) else f"{accuracy:.2f}"


def format_accuracies(accuracies):
    """An epoch's accuracies for its log line ("" when it was not evaluated)."""
    validation = f"val {accuracies['val_acc']:.2f}% | " if "val_acc" in accuracies else ""
    return f"{validation}top-1 {accuracies['test_acc']:.2f}% | " if "test_acc" in accuracies else ""


def format_duration(seconds):
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"
