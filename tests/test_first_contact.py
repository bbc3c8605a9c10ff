"""What a newcomer meets first: --help, Ctrl-C, errors in config files, contradictory settings,
a second run on the same checkpoint, a finished run resumed, time estimates, and val.py's
defaults."""

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import val
from tests.conftest import (ROOT, kill_when, make_image_folder, run_main, run_script, runs_until, saved_epoch,
                            wait_for_epoch)
from checkpoints import load_checkpoint

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


def default_ctrl_c():
    """In the child: SIGINT as a terminal's shell leaves it. A shell that starts pytest in the
    background ignores SIGINT, the child would inherit that, and Ctrl-C would do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("sig, status, word", [(signal.SIGINT, 130, "interrupted"),
                                               (signal.SIGTERM, 143, "terminated (SIGTERM)")],
                         ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_keeps_the_checkpoint_and_says_how_to_continue(folder, tmp_path, sig, status, word):
    # SIGTERM is what a cluster scheduler sends before it kills a preempted job.
    args = train_args(folder, tmp_path, "--num_epochs=30")
    process = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, preexec_fn=default_ctrl_c)
    path = str(tmp_path / "noLars-16.pth")
    wait_for_epoch(process, path, 1)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status
    (line,) = stderr.strip().splitlines()
    epoch = load_checkpoint(path)["epoch"]
    assert line.startswith(f"{word}: {path} keeps epoch {epoch} of 30; continue with: python train.py ")
    assert line.endswith("--resume=True")
    assert runs_until(["train.py", *args, "--resume=True"], f"resumed at epoch {epoch}")
    assert saved_epoch(path) < 30, "the line came as the run resumed (flushed), not when it ended"


@pytest.mark.slow
@pytest.mark.parametrize("sig, status, word", [(signal.SIGINT, 130, "interrupted"),
                                               (signal.SIGTERM, 143, "terminated (SIGTERM)")],
                         ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_in_a_sweep_names_the_run_and_the_command_that_continues(folder, tmp_path, sig, status, word):
    args = [*RUN, "--num_epochs=30", "--sweep_batch_sizes=[16]", "--sweep_with_lars=[False]",
            f"--data_dir={folder}", f"--checkpoint_dir={tmp_path / 'ck'}", f"--results_dir={tmp_path / 'res'}"]
    process = subprocess.Popen([sys.executable, "sweep.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=default_ctrl_c)
    path = str(tmp_path / "ck" / "default" / "noLars-16.pth")
    wait_for_epoch(process, path, 1)
    if sig == signal.SIGINT:
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the sweep and its train.py
    else:
        process.send_signal(signal.SIGTERM)  # as a scheduler's: the sweep alone, which passes it on
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status
    lines = [line for line in stderr.strip().splitlines() if line and not line.startswith("warning: ")]
    assert len(lines) == 2 and lines[0].startswith(f"{word}: ")  # train.py's line, then the sweep's
    assert lines[1].startswith(f"{word}: default, batch 16, SGD, seed 0; its checkpoint keeps every finished epoch.")
    assert lines[1].endswith("Continue with: " + shlex.join(["python", "sweep.py", *args]))


@pytest.mark.parametrize("text, where", [("MODEL = resnet20\n", "line 1: NameError"),
                                         ("K = 2\nLR = (\n", "line 2: SyntaxError"),
                                         ("K = 2\nLR = 1 / 0\n", "line 2: ZeroDivisionError")])
def test_an_error_in_a_config_file_is_one_line_naming_file_and_line(tmp_path, text, where, capsys):
    preset = tmp_path / "broken.py"
    preset.write_text(text)
    status, _, stderr = run_main("train.py", str(preset), f"--checkpoint_dir={tmp_path / 'ck'}", capsys=capsys)
    assert status == 2 and stderr.strip().count("\n") == 0
    assert stderr.startswith(f"error: {preset}, {where}")


@pytest.mark.parametrize("argv", [["--k=2", "--batch_size=512"], ["{preset}"]])
def test_contradictory_k_and_batch_size_are_refused(tmp_path, argv, capsys):
    preset = tmp_path / "both.py"
    preset.write_text("K = 4\nBATCH_SIZE = 256\n")
    status, _, stderr = run_main("train.py", *[a.format(preset=preset) for a in argv],
                                 f"--checkpoint_dir={tmp_path / 'ck'}", capsys=capsys)
    assert status == 2 and "contradict each other" in stderr
    assert stderr.strip().count("\n") == 0 and not (tmp_path / "ck").exists()


@pytest.mark.slow
def test_a_second_run_on_the_same_checkpoint_is_refused_and_a_killed_one_blocks_nothing(folder, tmp_path):
    args = train_args(folder, tmp_path, "--num_epochs=30")
    process = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = str(tmp_path / "noLars-16.pth")
    wait_for_epoch(process, path, 0)
    second = run_script("train.py", *args, "--resume=True")
    assert second.returncode == 2 and second.stderr.strip().count("\n") == 0
    assert "in use by another process" in second.stderr
    kill_when(process, path, 1, 0.0)
    assert runs_until(["train.py", *args, "--resume=True"], "resumed at epoch"), "the OS released the killed run's lock"
    assert saved_epoch(path) < 30, "the line came as the run resumed (flushed), not when it ended"


@pytest.mark.slow
def test_a_second_sweep_on_the_same_results_is_refused(folder, tmp_path):
    from sweep import sweep_lock_path
    from checkpoints import hold_lock

    args = ["--sweep_batch_sizes=[16]", "--sweep_with_lars=[False]", *RUN, f"--data_dir={folder}",
            f"--checkpoint_dir={tmp_path / 'ck'}", f"--results_dir={tmp_path / 'res'}"]
    code = f"import sys, time; sys.path.insert(0, {ROOT!r}); from checkpoints import hold_lock; " \
           f"held = hold_lock({sweep_lock_path(str(tmp_path / 'res'), 'default')!r}, 'x'); print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_script("sweep.py", *args)
        assert result.returncode == 2 and "in use by another process" in result.stderr
        assert not (tmp_path / "ck").exists()
    finally:
        holder.kill()
        holder.wait()
    assert hold_lock(sweep_lock_path(str(tmp_path / "res"), "default"), "x") is not None


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

    # Another folder, whose training images have other statistics: val.py must still normalise
    # with the ones the run recorded, not recompute them from the folder it reads.
    other = make_image_folder(tmp_path / "other", per_class_train=8, per_class_test=4, seed=7)
    from data import TestSet, channel_stats, load_cifar10

    assert channel_stats(load_cifar10(other)["train_images"])[0].tolist() != checkpoint["normalisation"]["mean"]
    used = []
    monkeypatch.setattr(val, "TestSet", lambda images, labels, mean, std, *args: used.append((mean, std)) or
                        TestSet(images, labels, mean, std, *args))
    val.main([f"--checkpoint={tmp_path / 'noLars-16.pth'}", f"--data_dir={other}", "--device=cpu"])
    assert used == [(checkpoint["normalisation"]["mean"], checkpoint["normalisation"]["std"])]


# --- second pass: help, traps in hyperparams.py and config files, refusals that name their fix,
# what val.py says without a checkpoint, SIGTERM -------------------------------------------------

@pytest.mark.parametrize("script", ["train.py", "val.py", "sweep.py"])
def test_help_imports_no_torch_and_fits_100_columns_in_whole_sentences(script):
    code = ("import runpy, sys\n"
            f"sys.argv = [{script!r}, '-h']\n"
            "try:\n"
            f"    runpy.run_path({script!r}, run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    assert e.code in (0, None), e.code\n"
            "print('torch imported:', 'torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "torch imported: False"
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    import models

    assert f"one of {', '.join(models.MODELS)}" in " ".join(line.strip() for line in lines), "every model choice"
    presets = result.stdout.split("Presets")[1].split("Settings")[0]
    descriptions = re.split(r"\n  configs/\S+\s+", presets)[1:]
    assert len(descriptions) >= 10 and all(d.rstrip().endswith((".", "?")) for d in descriptions)


def project_copy(tmp_path, hyperparams_edit):
    """The project's code in a fresh folder with one line of hyperparams.py edited, as a user would."""
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", "results", "checkpoint", "data", "tests",
                                                              "__pycache__", "benchmarks"))
    path = copy / "hyperparams.py"
    old, new = hyperparams_edit
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    return copy


def test_editing_batch_size_in_hyperparams_is_refused_with_what_to_set(tmp_path):
    copy = project_copy(tmp_path, ("\nBATCH_SIZE = BASE_BATCH_SIZE * K", "\nBATCH_SIZE = 256"))
    result = subprocess.run([sys.executable, "train.py", f"--checkpoint_dir={tmp_path / 'ck'}"], cwd=copy,
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "BATCH_SIZE = 256" in result.stderr and "set K = 2 instead" in result.stderr
    assert "--batch_size=256" in result.stderr and not (tmp_path / "ck").exists()


def test_editing_k_in_hyperparams_gives_the_same_run_as_the_batch_size_override(tmp_path):
    copy = project_copy(tmp_path, ("\nK: int | float = 1 ", "\nK: int | float = 2 "))
    code = "from config import load_config; c = load_config([]); print(c.K, c.BATCH_SIZE, c.LR, c.END_LR)"
    edited = subprocess.run([sys.executable, "-c", code], cwd=copy, capture_output=True, text=True, timeout=60)
    from config import load_config

    overridden = load_config(["--batch_size=256"])
    expected = ["2", "256", "0.1", "2e-05"]  # K = 2: BATCH_SIZE = 128 K, LR = 0.05 K, END_LR = 1e-5 K
    assert edited.stdout.split() == expected
    assert [str(v) for v in (overridden.K, overridden.BATCH_SIZE, overridden.LR, overridden.END_LR)] == expected


@pytest.mark.parametrize("text", ["batch_size = 256\n", "K = 2\nwith_lars = True\n"])
def test_a_lower_case_setting_in_a_config_file_is_refused_not_ignored(tmp_path, text, capsys):
    preset = tmp_path / "lower.py"
    preset.write_text(text)
    status, _, stderr = run_main("train.py", str(preset), f"--checkpoint_dir={tmp_path / 'ck'}", capsys=capsys)
    assert status == 2 and stderr.strip().count("\n") == 0
    name = text.splitlines()[-1].split()[0]
    assert f"assigns {name}: settings are upper-case, write {name.upper()} = ..." in stderr
    from config import load_config

    assert load_config(["configs/study.py"]).SWEEP_PEAK_LRS is not None, "lower-case helper names still work"


@pytest.mark.parametrize("argv, hint", [
    (["--num_epochs=1"], "add --warmup_epochs=0"),
    (["--batchsize=256"], "did you mean --batch_size?"),
    (["--lerning_rate=0.1"], "did you mean --lr?"),  # other frameworks' name, misspelt
    (["--epochs=5"], "did you mean --num_epochs?"),
    (["--colour=red"], "not a constant in hyperparams.py"),  # nothing close: no suggestion
])
def test_a_refusal_with_an_obvious_fix_names_it(tmp_path, argv, hint, capsys):
    status, _, stderr = run_main("train.py", *argv, f"--checkpoint_dir={tmp_path / 'ck'}", capsys=capsys)
    assert status == 2 and stderr.strip().count("\n") == 0
    assert stderr.rstrip().endswith(hint) and ("did you mean" in stderr) == ("did you mean" in hint)


def test_val_without_a_checkpoint_names_those_that_exist_or_the_command_that_makes_one(tmp_path, capsys):
    args = ["--model=resnet20", "--batch_size=64", f"--checkpoint_dir={tmp_path}"]
    status, _, stderr = run_main("val.py", *args, capsys=capsys)
    assert status == 1 and stderr.strip().count("\n") == 0
    assert stderr.rstrip().endswith("train one with: " + shlex.join(["python", "train.py", *args, "--device=cpu"]))
    (tmp_path / "withLars-128.pth").write_bytes(b"")
    (tmp_path / "noLars-256.pth").write_bytes(b"")
    status, _, stderr = run_main("val.py", *args, capsys=capsys)
    assert status == 1 and f"{tmp_path} has noLars-256.pth, withLars-128.pth" in stderr


def test_val_given_a_results_folder_points_to_results(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    status, _, stderr = run_main("val.py", "results/study", capsys=capsys)
    assert status == 2 and "python val.py --results=results/study" in stderr


def test_a_data_dir_that_holds_the_unpacked_cifar10_folder_is_found(tmp_path):
    from data import load_cifar10

    make_image_folder(tmp_path / "cifar10")
    assert len(load_cifar10(str(tmp_path))["train_labels"]) == 12


@pytest.mark.slow
def test_a_short_run_speaks_in_the_singular_shows_only_its_settings_and_points_to_val(folder, tmp_path):
    args = train_args(folder, tmp_path, "--num_epochs=1")
    result = run_script("train.py", *args)
    assert result.returncode == 0, result.stderr
    assert "for 1 epoch\n" in result.stdout and "1 epochs" not in result.stdout
    assert "SWEEP_" not in result.stdout and "RESULTS_DIR" not in result.stdout and "NUM_EPOCHS" in result.stdout
    final = load_checkpoint(str(tmp_path / "noLars-16.pth"))["history"][-1]["test_acc"]
    assert result.stdout.strip().splitlines()[-1] == (
        f"done: {tmp_path / 'noLars-16.pth'}, top-1 {final:.2f}% after 1 epoch; see it with: "
        + shlex.join(["python", "val.py", *args]))


@pytest.mark.slow
def test_a_second_run_is_refused_before_it_reads_any_data(folder, tmp_path):
    args = train_args(folder, tmp_path, "--num_epochs=30")
    process = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        path = str(tmp_path / "noLars-16.pth")
        wait_for_epoch(process, path, 0)
        for resume in ([], ["--resume=True"]):  # the data folder does not exist: reading it would fail first
            second = run_script("train.py", *args, *resume, f"--data_dir={tmp_path / 'no-data'}")
            assert second.returncode == 2 and "in use by another process" in second.stderr, second.stderr
            assert "RESUME" not in second.stderr, "no advice that would collide with the running job"
    finally:
        process.kill()
        process.wait()


# --- first contact, third pass (issue 59) ---------------------------------------------------

PLAN_PRESET = """
SWEEP_BATCH_SIZES = [32, 16]
SWEEP_WITH_LARS = [False, True]
SWEEP_PEAK_LRS = [0.2, 0.1]
SWEEP_EXTRA_SEEDS = [1]
MODEL = "resnet20"
NUM_EPOCHS = 3
WARMUP_EPOCHS = 0
"""


def plan_sweep(tmp_path, monkeypatch, capsys, statuses, interrupt_writing=False):
    """sweep.py's main in this process on a 4-cell, 8-run grid, with train.py replaced by
    ``statuses`` (the exit statuses its runs return, in order); (exit status, stdout, stderr,
    the runs started)."""
    import sweep

    preset = tmp_path / "plan.py"
    preset.write_text(PLAN_PRESET)
    started = []

    def run_cell(args, status):
        started.append(args)
        return statuses[len(started) - 1]

    def summarise(run, recorded):  # the first LR of the 32 SGD cell is recorded as finished
        done = (run.batch_size, run.with_lars, run.role, run.summary_fields["peak_lr"]) == (32, False, "grid", 0.2) or \
            any(tuple(run.args) == tuple(a) for a in started)
        return {**run.summary_fields, "status": "finished" if done else "not run", "epochs_done": 3 if done else 0,
                "final_top1": 50.0 if done else None, "final_val_top1": None, "hyperparams": {"LR": 0.1}}

    def write_results(results_dir, results):
        if interrupt_writing:
            raise KeyboardInterrupt
        os.makedirs(results_dir, exist_ok=True)

    monkeypatch.setattr(sweep, "run_cell", run_cell)
    monkeypatch.setattr(sweep, "summarise", summarise)
    monkeypatch.setattr(sweep, "write_results", write_results)
    status, out, err = run_main("sweep.py", str(preset), f"--results_dir={tmp_path / 'res'}",
                                f"--checkpoint_dir={tmp_path / 'ck'}", capsys=capsys)
    return status, out, err, started


def test_a_sweep_prints_its_plan_before_the_first_run(tmp_path, monkeypatch, capsys):
    status, out, _, started = plan_sweep(tmp_path, monkeypatch, capsys, [0] * 20)
    assert status == 0 and len(started) == 7 + 4, "7 grid runs, then each cell's best with seed 1"
    lines = out.splitlines()
    assert lines[0] == "plan: batch 32, SGD, peak LR 0.2, seed 0: finished, skipped"
    assert lines[1] == "plan: 7 runs to train (resnet20, 3 epochs each), in this order:"
    assert lines[2] == "    1. batch 32, SGD, peak LR 0.1, seed 0, 3 epochs"
    assert lines[8] == "    7. batch 16, LARS, peak LR 0.1, seed 0, 3 epochs"
    assert "extra seeds" in lines[9] and lines[10].startswith("plan: stop it at any time (Ctrl-C); the same command")
    assert lines.index(lines[10]) < min(i for i, line in enumerate(lines) if "results in" in line)


def test_a_run_refused_for_bad_input_stops_the_sweep_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    status, _, err, started = plan_sweep(tmp_path, monkeypatch, capsys, [2] * 20)
    assert status == 2 and len(started) == 1, "the first refusal stops the sweep"
    assert err.strip().splitlines()[-1].startswith("plan: stopped at batch 32, SGD, peak LR 0.1, seed 0")
    assert not (tmp_path / "res" / "plan").exists()


def test_ctrl_c_while_a_sweep_writes_its_results_is_one_line(tmp_path, monkeypatch, capsys):
    status, _, err, started = plan_sweep(tmp_path, monkeypatch, capsys, [0] * 20, interrupt_writing=True)
    assert status == 130 and len(started) == 1
    assert err.strip().splitlines() == [
        f"interrupted: plan, between runs; every run's checkpoint and results.json are whole. Continue with: "
        f"python sweep.py {tmp_path / 'plan.py'} --results_dir={tmp_path / 'res'} --checkpoint_dir={tmp_path / 'ck'} "
        f"--device=cpu"]


@pytest.mark.slow
def test_a_sweep_without_data_stops_at_its_first_run_with_the_data_error_and_writes_nothing(tmp_path):
    result = run_script("sweep.py", *RUN, "--sweep_batch_sizes=[16, 32]", "--sweep_with_lars=[False, True]",
                        f"--data_dir={tmp_path / 'empty'}", f"--checkpoint_dir={tmp_path / 'ck'}",
                        f"--results_dir={tmp_path / 'res'}")
    assert result.returncode == 2 and result.stdout.count("train.py") == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no CIFAR-10 found" in errors[0] and "Traceback" not in result.stderr
    assert os.listdir(tmp_path / "res") == [".default.sweep.lock"], "no results folder for a sweep that recorded nothing"


def test_the_default_protocol_on_a_cpu_is_announced_with_its_estimate_before_anything_is_read(tmp_path, capsys):
    # ResNet-50 for 200 epochs: measured here, it needs far more than a CPU should be given
    status, _, err = run_main("train.py", f"--data_dir={tmp_path / 'empty'}", f"--checkpoint_dir={tmp_path}",
                              capsys=capsys)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 2 and "no CIFAR-10 found" in lines[1], "the warning, then the data error"
    assert re.match(r"warning: this run needs about \d+h \d\dm \d\ds of training on this CPU", lines[0])
    assert "python train.py configs/cpu.py" in lines[0] and "Going on" in lines[0]


def test_a_cpu_sized_run_gets_no_warning(tmp_path, capsys):
    status, _, err = run_main("train.py", "configs/cpu.py", f"--data_dir={tmp_path / 'empty'}",
                              f"--checkpoint_dir={tmp_path}", capsys=capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "warning" not in err


def test_vals_hint_names_a_command_that_fits_a_cpu(tmp_path, capsys):
    status, _, err = run_main("val.py", f"--checkpoint_dir={tmp_path}", capsys=capsys)
    assert status == 1 and "train one that fits this CPU with: python train.py configs/cpu.py, " \
                           "then: python val.py configs/cpu.py" in err
    status, _, err = run_main("val.py", "configs/cpu.py", f"--checkpoint_dir={tmp_path}", capsys=capsys)
    assert status == 1 and err.strip().endswith(f"train one with: python train.py configs/cpu.py "
                                                f"--checkpoint_dir={tmp_path} --device=cpu")


@pytest.mark.parametrize("command", ["python train.py --help", "python sweep.py -h", "python val.py --help",
                                     pytest.param("python benchmarks/optimizer_step.py --help", marks=pytest.mark.slow)])
def test_output_closed_early_ends_quietly(command):
    # `| head -n 1` closes the pipe while help is still being written
    result = subprocess.run(f"{sys.executable} {command.removeprefix('python ')} | head -n 1", shell=True, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.stderr == "" and len(result.stdout.splitlines()) == 1


@pytest.mark.slow
def test_a_results_table_piped_into_head_ends_quietly():
    result = subprocess.run(f"{sys.executable} val.py --results=results/study | head -n 2", shell=True, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.stderr == "" and len(result.stdout.splitlines()) == 2


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train.py", "sweep.py", "val.py"])
@pytest.mark.parametrize("after", [0.5, 1.0])
def test_ctrl_c_while_a_script_starts_is_one_line(script, after):
    process = subprocess.Popen([sys.executable, script, "--device=cpu"], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, preexec_fn=default_ctrl_c)
    time.sleep(after)  # while torch loads, which takes seconds
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    lines = stderr.splitlines()  # "interrupted" while torch loads; if it loaded already, main()'s line
    assert process.returncode == 130 and len(lines) == 1 and lines[0].startswith("interrupted"), stderr


CTRL_C_IN_A_FINALLY = """
import os, signal, sys
import config
config.start_command("doc", [])
{switch}
try:
    os.kill(os.getpid(), signal.SIGINT)
    signal.pause()
finally:
    print("unwound")
"""


@pytest.mark.parametrize("switch, unwinds", [("", False), ("config.imports_done()", True)])
def test_ctrl_c_while_torch_loads_leaves_without_unwinding_and_afterwards_unwinds(switch, unwinds):
    # An exception raised while torch's C++ initialisers run aborts the process (SIGABRT, seen in
    # CI), so start_command's handler leaves at once; once the imports are done, `finally` blocks
    # must run (a file written atomically removes its temporary copy)
    result = subprocess.run([sys.executable, "-c", CTRL_C_IN_A_FINALLY.format(switch=switch)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, preexec_fn=default_ctrl_c)
    assert result.returncode == 130 and result.stderr == "interrupted\n"
    assert (result.stdout == "unwound\n") is unwinds


def test_a_gpu_sized_sweep_on_a_cpu_is_announced_with_its_estimate_before_its_first_run(tmp_path, monkeypatch,
                                                                                          capsys):
    # `python sweep.py` alone: the original's 14 runs of ResNet-50 for 200 epochs
    import sweep

    started = []
    monkeypatch.setattr(sweep, "run_cell", lambda args, status: started.append(args) or 2)
    status, out, err = run_main("sweep.py", f"--results_dir={tmp_path / 'res'}", f"--checkpoint_dir={tmp_path / 'ck'}",
                                capsys=capsys)
    assert status == 2 and len(started) == 1
    warning = next(line for line in err.splitlines() if line.startswith("warning: "))
    assert re.match(r"warning: this sweep \(14 runs\) needs about \d+h \d\dm \d\ds of training on this CPU", warning)
    assert "python sweep.py configs/cpu_sweep.py" in warning
    assert "default: 14 runs to train (resnet50_imagenet, 200 epochs each), in this order:" in out
