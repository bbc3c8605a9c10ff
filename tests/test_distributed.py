"""torchrun DDP on CPU (gloo) against one process, and gradient accumulation."""

import os
import signal
import subprocess
import sys

import pytest
import torch

import models
from config import load_config
from data import load_cifar10
from tests.conftest import ROOT, NoBatchNorm, make_image_folder, run_script, wait_for_epoch
from trainer import Trainer
from checkpoints import load_checkpoint
from utils import Process

# One thread per process in both runs: kernels then sum in the same order, and the runs agree to
# the last bit here (with 2 threads in the single process they drift apart by 1e-3 in 6 steps).
# A validation split too: each process holds it out on its own, so a split that differed between
# processes would train them on different images.
RUN = ["--model=resnet20", "--batch_size=32", "--num_epochs=2", "--warmup_epochs=1",
       "--with_lars=True", "--amp=False", "--num_threads=1", "--validation_size=30"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("ddp") / "data", per_class_train=32, per_class_test=10)


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py"]


@pytest.fixture(scope="module")
def ddp_run(folder, tmp_path_factory):
    """An uninterrupted 2-process run: its checkpoint directory and output."""
    checkpoint_dir = tmp_path_factory.mktemp("ddp")
    ddp = run_script(*TORCHRUN[1:], *RUN, f"--data_dir={folder}", f"--checkpoint_dir={checkpoint_dir}")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    return checkpoint_dir, ddp


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(folder, tmp_path, ddp_run):
    # Two ranks of 16 images each compute batch-norm statistics over 16 images, exactly as one
    # process does with MICRO_BATCH_SIZE=16; the gradients are then the same global mean.
    common = [*RUN, f"--data_dir={folder}"]
    ddp_dir, ddp = ddp_run
    single = run_script("train.py", *common, "--micro_batch_size=16", f"--checkpoint_dir={tmp_path / 'one'}")
    assert single.returncode == 0, single.stderr

    checkpoints = [f for f in os.listdir(ddp_dir) if not f.startswith(".")]  # not rank 0's lock file
    assert checkpoints == ["withLars-32.pth"], "one checkpoint, written by rank 0"
    assert ddp.stdout.count("epoch   1/2") == 1, "only rank 0 prints"
    distributed = load_checkpoint(str(ddp_dir / "withLars-32.pth"))
    alone = load_checkpoint(str(tmp_path / "one" / "withLars-32.pth"))
    assert [row["epoch"] for row in distributed["history"]] == [1, 2]
    assert distributed["steps_per_epoch"] == (96 - 30) // 32, "the held-out images are not trained on"
    assert [row["val_acc"] for row in distributed["history"]] == [row["val_acc"] for row in alone["history"]]
    assert distributed["hyperparams"]["BATCH_SIZE"] == 32
    for name, tensor in alone["model"].items():
        if "running" in name or "num_batches" in name:
            continue  # DDP keeps rank 0's BN running statistics; they do not enter training
        assert torch.equal(distributed["model"][name], tensor), name  # to the last bit, as the README says


@pytest.mark.slow
def test_a_killed_distributed_run_resumes_to_the_same_result(folder, tmp_path, ddp_run):
    args = [*RUN, f"--data_dir={folder}", f"--checkpoint_dir={tmp_path}"]
    launcher = subprocess.Popen([*TORCHRUN, *args, "--device=cpu"], cwd=ROOT, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = tmp_path / "withLars-32.pth"
    wait_for_epoch(launcher, str(path), 1)
    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and both workers
    launcher.wait()
    resumed = run_script(*TORCHRUN[1:], *args, "--resume=True")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = load_checkpoint(str(ddp_run[0] / "withLars-32.pth"))
    got = load_checkpoint(str(path))
    assert [(r["epoch"], r["test_acc"], r["train_loss"]) for r in got["history"]] == \
        [(r["epoch"], r["test_acc"], r["train_loss"]) for r in expected["history"]]
    for name, tensor in expected["model"].items():
        assert torch.equal(got["model"][name], tensor), name


@pytest.mark.parametrize("with_lars", [False, True])
def test_accumulated_micro_batches_equal_the_one_batch_step(folder, monkeypatch, with_lars):
    monkeypatch.setitem(models.MODELS, "no_bn", NoBatchNorm)
    data = load_cifar10(folder)
    trainers = [Trainer(load_config([f"--model=no_bn", "--batch_size=32", f"--with_lars={with_lars}",
                                     f"--micro_batch_size={micro}", "--num_epochs=2"]),
                        Process(), torch.device("cpu"), data)
                for micro in (None, 8)]
    initial = trainers[0].model.fc.weight.detach().clone()
    for images, labels in trainers[0].batches.train_epoch(0, 0, 32):
        losses = [t.train_step(images, labels) for t in trainers]
        torch.testing.assert_close(losses[0], losses[1])
    for a, b in zip(trainers[0].model.parameters(), trainers[1].model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(trainers[0].model.fc.weight, initial), "the steps changed the weights"
