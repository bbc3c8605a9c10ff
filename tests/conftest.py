import importlib.util
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from checkpoints import CheckpointError, load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_ARCHIVE = os.path.join(ROOT, "..", "shared", "data", "cifar10-jpg.tar.gz")

# No test reaches the network: the guard refuses every name lookup and connection beyond loopback,
# in this process and, through PYTHONPATH, in every Python process a test starts (scripts,
# torchrun and its workers). Without it, a test whose data folder is empty would download CIFAR-10.
NO_NETWORK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "no_network")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (NO_NETWORK, os.environ.get("PYTHONPATH")) if p)
_guard_spec = importlib.util.spec_from_file_location("no_network_guard", os.path.join(NO_NETWORK, "sitecustomize.py"))
network_guard = importlib.util.module_from_spec(_guard_spec)
_guard_spec.loader.exec_module(network_guard)


DEFAULT_DATA = os.path.join(ROOT, "data")  # hyperparams.DATA_DIR, where a first run downloads CIFAR-10
GET_DATA = "python -c \"import torchvision; torchvision.datasets.CIFAR10('data', download=True)\""


def real_cifar10():
    """(where the end-to-end tests take the real CIFAR-10 from, in words; the archive or folder),
    or (None, None): $CIFAR10_DIR, else the archive beside the project, else the default data
    folder when it holds CIFAR-10 in either layout (image folders, or torchvision's download)."""
    from data import cifar10_layout

    if os.environ.get("CIFAR10_DIR"):
        return f"$CIFAR10_DIR ({os.environ['CIFAR10_DIR']})", os.environ["CIFAR10_DIR"]
    if os.path.isfile(SHARED_ARCHIVE):
        return f"the archive {os.path.normpath(SHARED_ARCHIVE)}", SHARED_ARCHIVE
    layout = cifar10_layout(DEFAULT_DATA)
    if layout:
        return f"{DEFAULT_DATA} ({layout})", DEFAULT_DATA
    return None, None


TEST_TIME_LIMIT = "TEST_TIME_LIMIT"  # seconds one test may take when set (the GPU check sets it); no plugin needed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """With $TEST_TIME_LIMIT, a test still running after that many seconds fails, named, and the
    session goes on to the next test (SIGALRM interrupts it in the main thread)."""
    limit = int(os.environ.get(TEST_TIME_LIMIT) or 0)
    if not limit:
        return (yield)

    def over_time(signum, frame):
        pytest.fail(f"over the {limit} s limit per test (${TEST_TIME_LIMIT})", pytrace=False)

    previous = signal.signal(signal.SIGALRM, over_time)
    signal.alarm(limit)
    try:
        return (yield)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def pytest_report_header():
    where, _ = real_cifar10()
    return f"real CIFAR-10 for the end-to-end tests: {where or 'none found (those tests will fail)'}"


# Every implementation of a LARS step; the multi-tensor paths meant for CUDA are forced on the
# CPU (CI has no GPU) through the function that chooses between them.
LARS_PATHS = ["single-tensor", "multi-tensor", "multi-tensor, CUDA path", "multi-tensor, device path"]


def use_lars_path(path, monkeypatch):
    """The ``foreach`` argument that runs ``path``, forcing its update kind where needed: the CUDA
    path (step sizes read once, foreach kernels with scalar lists) or the device path (step sizes
    kept on the device, as with ``capturable=True`` or inside a CUDA graph capture)."""
    import lars
    forced = {"multi-tensor, CUDA path": "scalar lists", "multi-tensor, device path": "device"}.get(path)
    if forced is not None:
        monkeypatch.setattr(lars, "_update_kind", lambda device, capturable: forced)
    return None if path == "multi-tensor" else path != "single-tensor"


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory):
    """The real CIFAR-10, as ``real_cifar10`` finds it (an archive is unpacked first)."""
    _, found = real_cifar10()
    if found is None:
        pytest.fail(f"the end-to-end tests need the real CIFAR-10: none in $CIFAR10_DIR, "
                    f"{os.path.normpath(SHARED_ARCHIVE)} or {DEFAULT_DATA}; get it with: {GET_DATA}",
                    pytrace=False)
    if found != SHARED_ARCHIVE:
        return found
    target = tmp_path_factory.mktemp("real")
    with tarfile.open(SHARED_ARCHIVE) as archive:
        archive.extractall(target, filter="data")
    return str(target / "cifar10")


def make_image_folder(root, per_class_train=4, per_class_test=2, classes=("cat", "airplane", "dog"), seed=0):
    """A tiny image-folder tree of random 32x32 PNGs; returns its path."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class_train), ("test", per_class_test)):
        for name in classes:
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(root, split, name, f"{i:04d}.png"))
    return str(root)


@pytest.fixture
def tiny_folder(tmp_path):
    return make_image_folder(tmp_path / "tiny")


def run_script(*args, env=None, timeout=600):
    """Run a project script as a user would, without a terminal, on the CPU (under torchrun on
    a machine with one GPU, rank 1 would otherwise ask for cuda:1)."""
    return subprocess.run([sys.executable, *script_args(args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def run_main(script, *args, capsys):
    """``script``'s main() in this process, with the arguments ``run_script`` would give it:
    (exit status, stdout, stderr). For refusals, which come before anything slow: no second
    interpreter importing torch. Leaves the SIGTERM handler as it found it."""
    import importlib

    main = importlib.import_module(script.removesuffix(".py")).main
    handler = signal.getsignal(signal.SIGTERM)
    try:
        main(script_args([script, *args])[1:])
        status = 0
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 0
    finally:
        signal.signal(signal.SIGTERM, handler)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def train_in_process(monkeypatch):
    """sweep.py's runs as train.py's main() in this process instead of one interpreter each: the
    same bookkeeping and training, without an interpreter start (seconds) per run. Leaves the
    thread count and the SIGTERM handler as it found them."""
    import sweep
    import train

    def run_cell(args, status):
        threads, handler = torch.get_num_threads(), signal.getsignal(signal.SIGTERM)
        try:
            train.main([*args, *(["--resume=True"] if status == "partial" else [])])
            return 0
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else 0
        finally:
            torch.set_num_threads(threads)
            signal.signal(signal.SIGTERM, handler)

    monkeypatch.setattr(sweep, "run_cell", run_cell)


def script_args(args):
    """``args`` with --device=cpu for the scripts that train or evaluate (unless it is given)."""
    scripts = ("train.py", "val.py", "sweep.py")
    if any(a in scripts for a in args) and not any(a.lower().startswith("--device=") for a in args):
        return [*args, "--device=cpu"]
    return list(args)


def saved_epoch(path):
    try:
        return load_checkpoint(path)["epoch"]
    except CheckpointError:
        return -1


def wait_for_epoch(process, path, epoch, timeout=300):
    """Return once ``process``'s checkpoint at ``path`` has reached ``epoch``; fail if the
    process ends first or ``timeout`` seconds pass (a hung run fails the test, not CI)."""
    deadline = time.monotonic() + timeout
    while saved_epoch(path) < epoch:
        assert process.poll() is None, f"the run ended before its checkpoint reached epoch {epoch}"
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path} did not reach epoch {epoch} within {timeout} s")
        time.sleep(0.01)


def runs_until(args, text, timeout=300):
    """Start a project script and stop it once its output shows ``text``; whether it did. For
    checks of how a long run starts, without training it to the end."""
    process = subprocess.Popen([sys.executable, *script_args(args)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    deadline = threading.Timer(timeout, process.kill)  # ends the wait for a line that never comes
    deadline.start()
    try:
        return any(text in line for line in process.stdout)
    finally:
        deadline.cancel()
        process.kill()
        process.wait()


def kill_when(process, path, epoch, delay, sig=signal.SIGKILL):
    """Send ``sig`` to ``process`` ``delay`` seconds after its checkpoint reaches ``epoch``."""
    wait_for_epoch(process, path, epoch)
    time.sleep(delay)
    process.send_signal(sig)
    process.wait(timeout=120)


class NoBatchNorm(torch.nn.Module):
    """A model without batch norm, for tests where per-micro-batch statistics would differ."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
