"""train.py then val.py on a small subset of the real CIFAR-10, as a user runs them."""

import re

import pytest
import torch

from tests.conftest import run_script
from checkpoints import load_checkpoint

pytestmark = pytest.mark.slow

QUICK = ["--model=resnet20", "--train_subset=1024", "--num_epochs=2", "--warmup_epochs=1",
         "--amp=True", "--batch_size=128"]


@pytest.mark.parametrize("with_lars", [False, True])
def test_train_then_val_reports_the_checkpoints_accuracy(cifar10_dir, tmp_path, with_lars):
    args = [*QUICK, f"--data_dir={cifar10_dir}", f"--checkpoint_dir={tmp_path}", f"--with_lars={with_lars}"]
    trained = run_script("train.py", *args)
    assert trained.returncode == 0, trained.stderr
    assert "Traceback" not in trained.stderr

    name = "withLars-128.pth" if with_lars else "noLars-128.pth"
    checkpoint = load_checkpoint(str(tmp_path / name))  # weights_only=True inside
    assert checkpoint["epoch"] == 2 and not checkpoint["diverged"]
    history = checkpoint["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[1]["time"] > history[0]["time"] > 0
    assert history[-1]["test_acc"] > 15.0, "two epochs on 1,024 images should beat chance (10%)"
    assert checkpoint["hyperparams"]["WITH_LARS"] is with_lars

    validated = run_script("val.py", *args)
    assert validated.returncode == 0, validated.stderr
    last_line = validated.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"top-1 accuracy: (\d+\.\d\d)%", last_line)
    assert match, last_line
    assert float(match.group(1)) == pytest.approx(history[-1]["test_acc"], abs=0.005)
    assert "epoch | top-1 %" in validated.stdout


def test_val_without_checkpoint_is_a_one_line_error(tmp_path):
    result = run_script("val.py", f"--checkpoint={tmp_path / 'nothing.pth'}")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: no checkpoint at {tmp_path / 'nothing.pth'}"


def test_val_rejects_a_file_that_is_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "bogus.pth"
    torch.save({"weights": torch.ones(1)}, bogus)
    result = run_script("val.py", f"--checkpoint={bogus}")
    assert result.returncode == 1 and "not a pytorch-LARS checkpoint" in result.stderr
