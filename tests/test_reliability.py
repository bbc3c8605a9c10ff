"""Exact resume after SIGKILL, atomic checkpoints, safe loading, divergence, and bad input."""

import math
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import torch

from tests.conftest import NO_NETWORK, ROOT, kill_when, make_image_folder, run_main, run_script
from config import load_config
from data import CACHE_NAME
from sweep import sweep_lock_path
from checkpoints import CheckpointError, checkpoint_path, load_checkpoint, lock_path, save_checkpoint
from choosing import cell_summary
from data import load_cifar10
from trainer import Trainer
from utils import Process

RUN = ["--model=resnet20", "--batch_size=32", "--num_epochs=4", "--warmup_epochs=1",
       "--with_lars=True", "--num_threads=1", "--layer_stats_every=4"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    # 3 classes x 96 images: 9 steps of 32 per epoch, a fraction of a second each.
    return make_image_folder(tmp_path_factory.mktemp("resume") / "data", per_class_train=96, per_class_test=20)


def train_args(folder, checkpoint_dir, *extra):
    return [*RUN, f"--data_dir={folder}", f"--checkpoint_dir={checkpoint_dir}", *extra]


def final_state(checkpoint_dir):
    checkpoint = load_checkpoint(os.path.join(checkpoint_dir, "withLars-32.pth"))
    history = [(row["epoch"], row["test_acc"], row["train_loss"]) for row in checkpoint["history"]]
    return checkpoint, history


@pytest.fixture(scope="module")
def uninterrupted(folder, tmp_path_factory):
    checkpoint_dir = tmp_path_factory.mktemp("uninterrupted")
    result = run_script("train.py", *train_args(folder, checkpoint_dir))
    assert result.returncode == 0, result.stderr
    return final_state(checkpoint_dir)


@pytest.mark.slow
@pytest.mark.parametrize("epoch, delay", [(0, 0.0), (1, 0.15), (2, 0.3)])
def test_sigkill_then_resume_matches_an_uninterrupted_run_bit_for_bit(folder, tmp_path, uninterrupted, epoch, delay):
    args = train_args(folder, tmp_path)
    process = subprocess.Popen([sys.executable, "train.py", *args, "--device=cpu"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(process, str(tmp_path / "withLars-32.pth"), epoch, delay)
    assert process.returncode == -signal.SIGKILL
    resumed = run_script("train.py", *args, "--resume=True")
    assert resumed.returncode == 0, resumed.stderr
    checkpoint, history = final_state(tmp_path)
    expected_checkpoint, expected_history = uninterrupted
    assert history == expected_history
    assert checkpoint["layer_stats"] == expected_checkpoint["layer_stats"] and checkpoint["layer_stats"]["steps"]
    for name, tensor in expected_checkpoint["model"].items():
        assert torch.equal(checkpoint["model"][name], tensor), name
    expected_buffers = expected_checkpoint["optimizer"]["state"]
    for key, state in checkpoint["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], expected_buffers[key]["momentum_buffer"])


@pytest.mark.slow
def test_a_run_resumed_on_another_machine_records_each_machine_from_the_epoch_it_took_over(folder, tmp_path,
                                                                                           monkeypatch):
    import trainer as trainer_module
    data, cpu, threads = load_cifar10(folder), torch.device("cpu"), torch.get_num_threads()
    here = trainer_module.describe_machine(cpu, 1)
    elsewhere = {**here, "cpu": "another CPU"}

    def train_to(epochs, resumed_from=None):
        trainer = Trainer(load_config(train_args(folder, tmp_path, f"--num_epochs={epochs}")), Process(), cpu, data)
        if resumed_from is not None:
            trainer.resume(resumed_from)
        assert trainer.run()
        return trainer.state()

    try:
        first = train_to(1)
        assert first["machines"] == [{"from_epoch": 1, **here}]
        same_machine = train_to(2, first)
        assert same_machine["machines"] == first["machines"], "the same machine: listed once"
        monkeypatch.setattr(trainer_module, "describe_machine", lambda device, world_size: elsewhere)
        moved = train_to(3, same_machine)
        assert moved["machines"] == [{"from_epoch": 1, **here}, {"from_epoch": 3, **elsewhere}]
        assert cell_summary(checkpoint_path(load_config(train_args(folder, tmp_path))), 3)["machines"] == moved["machines"]
        legacy = {key: value for key, value in first.items() if key != "machines"} | {"machine": here}
        assert train_to(2, legacy)["machines"] == [{"from_epoch": None, **here}, {"from_epoch": 2, **elsewhere}], \
            "a checkpoint from before machines were listed: where its first epochs ran is unknown"
    finally:
        torch.set_num_threads(threads)


KILL_DURING_SAVE = """
import os, signal, sys, torch
sys.path.insert(0, {root!r})
import checkpoints
checkpoints.save_checkpoint({path!r}, {{"epoch": 1, "weights": torch.ones(3)}})
real_save = torch.save
def save_half_then_die(obj, f):
    real_save(obj, f)
    f.flush()
    f.truncate(f.tell() // 2)
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = save_half_then_die
checkpoints.save_checkpoint({path!r}, {{"epoch": 2, "weights": torch.zeros(3)}})
"""


def test_a_kill_during_a_save_leaves_the_previous_checkpoint_intact(tmp_path):
    path = str(tmp_path / "run.pth")
    result = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE.format(root=ROOT, path=path)])
    assert result.returncode == -signal.SIGKILL
    checkpoint = load_checkpoint(path)
    assert checkpoint["epoch"] == 1 and torch.equal(checkpoint["weights"], torch.ones(3))


def test_checkpoints_hold_only_plain_values(tmp_path):
    path = str(tmp_path / "c.pth")
    save_checkpoint(path, {"epoch": 3})
    assert load_checkpoint(path)["epoch"] == 3
    assert os.listdir(tmp_path) == ["c.pth"], "temporary file left behind"


@pytest.mark.slow
def test_foreign_truncated_and_mismatched_checkpoints_are_one_line_errors(folder, tmp_path):
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a pytorch-LARS checkpoint"):
        load_checkpoint(str(foreign))
    truncated = tmp_path / "truncated.pth"
    save_checkpoint(str(truncated), {"epoch": 1, "weights": torch.ones(1000)})
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(str(truncated))
    pickled = tmp_path / "pickled.pth"
    torch.save({"format": "pytorch-lars-checkpoint", "version": 1, "payload": object()}, pickled)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(str(pickled))  # weights_only refuses arbitrary objects

    trained = tmp_path / "run"
    assert run_script("train.py", *train_args(folder, trained, "--num_epochs=1", "--warmup_epochs=0")).returncode == 0
    result = run_script("val.py", *train_args(folder, trained, "--num_epochs=1", "--warmup_epochs=0"),
                        f"--checkpoint={trained / 'withLars-32.pth'}", "--model=resnet32")
    assert result.returncode == 0, "val.py rebuilds the checkpoint's own model"
    state = load_checkpoint(str(trained / "withLars-32.pth"))
    state["hyperparams"]["MODEL"] = "resnet32"
    save_checkpoint(str(tmp_path / "mismatch.pth"), {k: v for k, v in state.items() if k not in ("format", "version")})
    result = run_script("val.py", f"--data_dir={folder}", f"--checkpoint={tmp_path / 'mismatch.pth'}")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "does not fit this model" in result.stderr


@pytest.mark.slow
def test_divergence_stops_records_nan_and_keeps_the_last_finite_checkpoint(folder, tmp_path):
    args = train_args(folder, tmp_path, "--lr=1e30", "--with_lars=False", "--warmup_epochs=0")
    result = run_script("train.py", *args)
    assert result.returncode == 3, result.stderr
    assert "non-finite" in result.stderr and "Traceback" not in result.stderr
    checkpoint = load_checkpoint(str(tmp_path / "noLars-32.pth"))
    assert checkpoint["diverged"]
    assert math.isnan(checkpoint["history"][-1]["test_acc"])
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())
    assert checkpoint["epoch"] == len(checkpoint["history"]) - 1, "weights are from the last finished epoch"
    shown = run_script("val.py", *args)
    assert shown.returncode == 0 and "nan" in shown.stdout
    again = run_script("train.py", *args, "--resume=True")
    assert again.returncode == 2 and "diverged" in again.stderr


# (input, expected words in the message): tests/README.md's bad-input table, row for row.
BAD_INPUT = [
    (["--batch_size=0"], "BATCH_SIZE"),
    (["--batch_size=-128"], "BATCH_SIZE"),
    (["--batch_size=100.5"], "BATCH_SIZE must be int"),
    (["--lr=-0.1"], "LR = -0.1 is not allowed"),
    (["--momentum=-0.9"], "MOMENTUM"),
    (["--weight_decay=-1e-4"], "WEIGHT_DECAY"),
    (["--lars_weight_decay=-1e-3"], "LARS_WEIGHT_DECAY"),
    (["--model=vgg16"], "MODEL = 'vgg16' is not allowed"),
    (["--warmup_epochs=5", "--num_epochs=3"], "WARMUP_EPOCHS"),
    (["--batch_sise=256"], "unknown setting --batch_sise"),
    (["--num_epochs=ten"], "NUM_EPOCHS must be int"),
    (["--data_dir={empty}"], "no CIFAR-10 found"),
    (["--checkpoint_dir={file}/sub"], "CHECKPOINT_DIR"),
    (["--resume=True"], "RESUME = True but no checkpoint"),
    (["--k=2", "--batch_size=512"], "contradict each other"),
    (["--divergence_loss=0"], "DIVERGENCE_LOSS = 0.0 is not allowed"),
    (["--label_smoothing=1.0"], "LABEL_SMOOTHING = 1.0 is not allowed"),
    (["--cuda_graphs=True"], "CUDA_GRAPHS = True is not allowed: must be False on the CPU"),
]


@pytest.mark.parametrize("overrides, words", BAD_INPUT, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_input_is_one_line_exit_2_and_writes_nothing(folder, tmp_path, overrides, words, capsys):
    (tmp_path / "a_file").write_text("")
    checkpoint_dir = tmp_path / "checkpoints"
    before = sorted(os.listdir(folder))
    fill = {"empty": tmp_path / "empty", "file": tmp_path / "a_file"}
    overrides = [o.format(**fill) for o in overrides]
    status, _, stderr = run_main("train.py", *train_args(folder, checkpoint_dir, "--num_epochs=2"), *overrides,
                                 capsys=capsys)
    assert status == 2, stderr
    assert stderr.strip().count("\n") == 0 and words in stderr, stderr
    assert not checkpoint_dir.exists() and not (tmp_path / "empty").exists()
    assert sorted(os.listdir(folder)) == before


def test_batch_not_divisible_by_the_processes_is_rejected_before_joining(folder, tmp_path):
    env = {"WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0"}
    result = run_script("train.py", *train_args(folder, tmp_path / "c", "--batch_size=32"), env=env)
    assert result.returncode == 2 and "multiple of the number of processes (3)" in result.stderr


@pytest.mark.slow
def test_a_new_run_never_overwrites_an_existing_checkpoint(folder, tmp_path):
    args = train_args(folder, tmp_path, "--num_epochs=1", "--warmup_epochs=0")
    assert run_script("train.py", *args).returncode == 0
    path = tmp_path / "withLars-32.pth"
    saved = path.read_bytes()
    again = run_script("train.py", *args)
    assert again.returncode == 2 and "exists: set RESUME = True" in again.stderr
    assert path.read_bytes() == saved


def test_what_runs_write_inside_the_repository_is_git_ignored():
    # A user who runs with the defaults and then commits results/ must not commit checkpoints,
    # the data cache or the lock files that runs and sweeps leave behind.
    cfg = load_config([])
    checkpoint = checkpoint_path(cfg)
    written = [checkpoint, lock_path(checkpoint), os.path.join(cfg.DATA_DIR, CACHE_NAME),
               sweep_lock_path(cfg.RESULTS_DIR, "cpu_sweep")]
    result = subprocess.run(["git", "check-ignore", *written], cwd=ROOT, capture_output=True, text=True)
    assert sorted(result.stdout.split()) == sorted(written), result.stderr
    kept = os.path.join(cfg.RESULTS_DIR, "cpu_sweep", "results.json")
    assert subprocess.run(["git", "check-ignore", "-q", kept], cwd=ROOT).returncode == 1


def test_no_test_reaches_the_network_in_process_or_in_the_scripts_it_starts(tmp_path):
    from tests.conftest import network_guard

    for lookup in (lambda: socket.getaddrinfo("example.org", 443), lambda: socket.gethostbyname("example.org"),
                   lambda: socket.gethostbyname_ex("example.org"), lambda: socket.gethostbyaddr("93.184.215.14")):
        with pytest.raises(network_guard.NetworkRefused):
            lookup()
    assert socket.gethostbyname("localhost") in ("127.0.0.1", "::1"), "this machine's names still resolve"
    code = ("import socket\ntry:\n    socket.getaddrinfo('example.org', 443)\n"
            "except OSError as e:\n    print(type(e).__name__)\n")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == "NetworkRefused", "a script a test starts is guarded too"
    with socket.socket() as server, socket.socket() as client:  # loopback stays open: DDP's rendezvous needs it
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        client.connect(server.getsockname())
    empty = run_script("train.py", "--model=resnet20", f"--data_dir={tmp_path / 'empty'}",
                       f"--checkpoint_dir={tmp_path / 'ck'}", "--num_epochs=1", "--warmup_epochs=0")
    assert empty.returncode == 2 and "the tests reach no network" in empty.stderr, "torchvision's download was refused"


def test_lars_and_scheduler_import_only_torch_and_the_standard_library(tmp_path):
    import ast

    for name in ("lars.py", "scheduler.py"):
        tree = ast.parse(open(os.path.join(ROOT, name)).read())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        top = {module.split(".")[0] for module in imported}
        assert "torch" in top and top - {"torch"} <= sys.stdlib_module_names, (name, top)
        shutil.copy(os.path.join(ROOT, name), tmp_path / name)
    # As a user copies them: the two files alone in a folder import and run.
    code = "import torch, lars, scheduler\nopt = lars.LARS([torch.nn.Parameter(torch.ones(2))], lr=0.1)\n" \
           "scheduler.PolynomialLRDecay(opt, 10, 0.0, 2.0)\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": NO_NETWORK})  # the project off the path, the guard on
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_resume_refuses_a_changed_setting_and_accepts_operational_ones(folder, tmp_path, capsys):
    args = train_args(folder, tmp_path / "ck", "--num_epochs=2", "--warmup_epochs=0")
    first = run_script("train.py", *args)
    assert first.returncode == 0
    threads = torch.get_num_threads()
    try:  # the resumes in this process: no interpreter each
        for changed, value in (("--lr", "0.123"), ("--num_epochs", "3"), ("--label_smoothing", "0.1")):
            status, _, stderr = run_main("train.py", *args, "--resume=True", f"{changed}={value}", capsys=capsys)
            assert status == 2 and f"RESUME: {changed[2:].upper()} = " in stderr, stderr
            assert "differs from the checkpoint's" in stderr
        status, out, stderr = run_main("train.py", *args, "--resume=True", "--num_threads=1", "--layer_stats_every=7",
                                       f"--data_dir={os.path.join(folder, '.')}", "--num_workers=0", capsys=capsys)
        assert status == 0 and "is a complete run" in out, stderr
    finally:
        torch.set_num_threads(threads)


def test_no_command_imports_another_and_the_shared_modules_import_no_command():
    # train.py, val.py and sweep.py each stand alone on the modules below them; utils.py, the
    # lowest of those, imports nothing of the project.
    import ast

    commands = {"train", "val", "sweep"}
    project = {os.path.splitext(f)[0] for f in os.listdir(ROOT) if f.endswith(".py")} | {"models"}

    def imported(name):
        tree = ast.parse(open(os.path.join(ROOT, f"{name}.py")).read())
        names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        return names & project

    benchmarks = [f"benchmarks/{os.path.splitext(f)[0]}" for f in os.listdir(os.path.join(ROOT, "benchmarks"))
                  if f.endswith(".py")]
    for name in [*(project - {"models"}), *benchmarks]:
        assert not imported(name) & commands - {name}, f"{name}.py imports a command"
    assert imported("utils") == set(), "utils.py imports nothing of the project"
    assert "train" not in imported("val") and {"checkpoints", "evaluation"} <= imported("val")
