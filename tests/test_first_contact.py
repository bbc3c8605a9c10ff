"""What a newcomer meets first: --help, Ctrl-C, errors in config files, contradictory settings,
a second run on the same checkpoint, a finished run resumed, time estimates, and val.py's
defaults."""

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

import val
from tests.conftest import ROOT, kill_when, make_image_folder, run_script, saved_epoch
from utils import load_checkpoint

RUN = ["--model=resnet20", "--batch_size=16", "--num_epochs=2", "--warmup_epochs=0", "--num_threads=1",
       "--device=cpu"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    # 3 classes x 96 images: 18 steps of 16 per epoch, enough for the first-steps estimate.
    return make_image_folder(tmp_path_factory.mktemp("contact") / "data", per_class_train=96, per_class_test=10)


def train_args(folder, checkpoint_dir, *extra):
    return [*RUN, f"--data_dir={folder}", f"--checkpoint_dir={checkpoint_dir}", *extra]


@pytest.mark.parametrize("script", ["train.py", "val.py", "sweep.py"])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_lists_usage_presets_and_every_setting_with_its_default(script, flag):
    import hyperparams

    result = run_script(script, flag)
    assert result.returncode == 0 and result.stderr == ""
    assert f"python {script}" in result.stdout
    assert "configs/cpu_sweep.py" in result.stdout and "configs/study.py" in result.stdout
    for name in (n for n in vars(hyperparams) if n.isupper()):
        assert f"--{name.lower()}=" in result.stdout, name
    assert "--num_epochs=200" in result.stdout and "epochs of training" in result.stdout


@pytest.mark.slow
def test_a_finished_run_resumed_says_it_is_complete(folder, tmp_path):
    args = train_args(folder, tmp_path)
    first = run_script("train.py", *args)
    assert first.returncode == 0, first.stderr
    lines = [line for line in first.stdout.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and all(" left" in line for line in lines) and lines[-1].endswith("0m 00s left")
    assert "first 10 steps: about" in first.stdout and "for 2 epochs" in first.stdout
    final = load_checkpoint(str(tmp_path / "noLars-16.pth"))["history"][-1]["test_acc"]
    again = run_script("train.py", *args, "--resume=True")
    assert again.returncode == 0
    assert f"is a complete run: 2 of 2 epochs, final top-1 {final:.2f}%" in again.stdout


@pytest.mark.slow
def test_ctrl_c_keeps_the_checkpoint_and_says_how_to_continue(folder, tmp_path):
    args = train_args(folder, tmp_path, "--num_epochs=30")
    process = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    path = str(tmp_path / "noLars-16.pth")
    while saved_epoch(path) < 1:
        assert process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    (line,) = stderr.strip().splitlines()
    epoch = load_checkpoint(path)["epoch"]
    assert line.startswith(f"interrupted: {path} keeps epoch {epoch} of 30; continue with: python train.py ")
    assert line.endswith("--resume=True")


@pytest.mark.slow
def test_ctrl_c_in_a_sweep_names_the_run_and_the_command_that_continues(folder, tmp_path):
    args = [*RUN, "--num_epochs=30", "--sweep_batch_sizes=[16]", "--sweep_with_lars=[False]",
            f"--data_dir={folder}", f"--checkpoint_dir={tmp_path / 'ck'}", f"--results_dir={tmp_path / 'res'}"]
    process = subprocess.Popen([sys.executable, "sweep.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    path = str(tmp_path / "ck" / "default" / "noLars-16.pth")
    while saved_epoch(path) < 1:
        assert process.poll() is None
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the sweep and its train.py
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    lines = [line for line in stderr.strip().splitlines() if line]
    assert len(lines) == 2 and lines[0].startswith("interrupted: ")  # train.py's line, then the sweep's
    assert lines[1].startswith("interrupted: default, batch 16, LARS False;")
    assert lines[1].endswith("Continue with: " + shlex.join(["python", "sweep.py", *args]))


@pytest.mark.parametrize("text, where", [("MODEL = resnet20\n", "line 1: NameError"),
                                         ("K = 2\nLR = (\n", "line 2: SyntaxError"),
                                         ("K = 2\nLR = 1 / 0\n", "line 2: ZeroDivisionError")])
def test_an_error_in_a_config_file_is_one_line_naming_file_and_line(tmp_path, text, where):
    preset = tmp_path / "broken.py"
    preset.write_text(text)
    result = run_script("train.py", str(preset), f"--checkpoint_dir={tmp_path / 'ck'}")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith(f"error: {preset}, {where}")


@pytest.mark.parametrize("argv", [["--k=2", "--batch_size=512"], ["{preset}"]])
def test_contradictory_k_and_batch_size_are_refused(tmp_path, argv):
    preset = tmp_path / "both.py"
    preset.write_text("K = 4\nBATCH_SIZE = 256\n")
    result = run_script("train.py", *[a.format(preset=preset) for a in argv], f"--checkpoint_dir={tmp_path / 'ck'}")
    assert result.returncode == 2 and "contradict each other" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and not (tmp_path / "ck").exists()


@pytest.mark.slow
def test_a_second_run_on_the_same_checkpoint_is_refused_and_a_killed_one_blocks_nothing(folder, tmp_path):
    args = train_args(folder, tmp_path, "--num_epochs=30")
    process = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = str(tmp_path / "noLars-16.pth")
    while saved_epoch(path) < 0:
        assert process.poll() is None
        time.sleep(0.05)
    second = run_script("train.py", *args, "--resume=True")
    assert second.returncode == 2 and second.stderr.strip().count("\n") == 0
    assert "in use by another process" in second.stderr
    kill_when(process, path, 1, 0.0)
    resumed = run_script("train.py", *args, "--resume=True", "--num_epochs=30")
    assert "resumed at epoch" in resumed.stdout, "the OS released the killed run's lock"


@pytest.mark.slow
def test_a_second_sweep_on_the_same_results_is_refused(folder, tmp_path):
    from utils import hold_lock

    args = ["--sweep_batch_sizes=[16]", "--sweep_with_lars=[False]", *RUN, f"--data_dir={folder}",
            f"--checkpoint_dir={tmp_path / 'ck'}", f"--results_dir={tmp_path / 'res'}"]
    code = f"import sys, time; sys.path.insert(0, {ROOT!r}); from utils import hold_lock; " \
           f"held = hold_lock({str(tmp_path / 'res' / 'default' / '.sweep.lock')!r}, 'x'); print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_script("sweep.py", *args)
        assert result.returncode == 2 and "in use by another process" in result.stderr
        assert not (tmp_path / "ck").exists()
    finally:
        holder.kill()
        holder.wait()
    assert hold_lock(str(tmp_path / "res" / "default" / ".sweep.lock"), "x") is not None


@pytest.mark.slow
def test_val_reads_the_data_where_the_run_did_and_uses_the_recorded_normalisation(folder, tmp_path, monkeypatch):
    args = train_args(folder, tmp_path, "--num_epochs=1")
    assert run_script("train.py", *args).returncode == 0
    checkpoint = load_checkpoint(str(tmp_path / "noLars-16.pth"))
    assert len(checkpoint["normalisation"]["mean"]) == 3
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    monkeypatch.setattr(sys, "argv", ["val.py"])
    printed = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: printed.append(" ".join(map(str, a))))
    val.main([f"--checkpoint={tmp_path / 'noLars-16.pth'}", "--num_threads=1", "--device=cpu"])  # no --data_dir
    assert printed[-1] == f"top-1 accuracy: {checkpoint['history'][-1]['test_acc']:.2f}%"
    assert threads == [1]
