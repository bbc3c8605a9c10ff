"""The paths that exist for GPUs, run where CUDA is: LARS's capturable step without host
synchronisation, its default step against it and inside a CUDA graph capture, CUDA_GRAPHS,
float16 with GradScaler, the compiled step, train.py end to end with AMP and channels-last and an
exact resume, val.py reading a GPU checkpoint on the CPU, and torchrun with nccl. Skipped,
with the reason, where CUDA is absent (`python -m pytest -m cuda` runs just these)."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from lars import LARS
from tests.conftest import ROOT, kill_when, run_script
from checkpoints import load_checkpoint

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

HYPER = dict(momentum=0.9, weight_decay=5e-4, trust_coef=0.02)


def params_with_grads(case, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    shapes = [(64, 32, 3, 3), (64,), (10, 64)]
    params = [torch.nn.Parameter(torch.randn(s, device="cuda", generator=g)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, device="cuda", generator=g)
    if case == "zero weight":
        params[1].data.zero_()
    elif case == "zero gradient":
        params[2].grad.zero_()
    return params


DEVICE_ONLY = {"single-tensor": {"foreach": False}, "multi-tensor, capturable": {"capturable": True}}


@pytest.mark.parametrize("path", DEVICE_ONLY)
@pytest.mark.parametrize("case", ["plain", "zero weight", "zero gradient"])
@pytest.mark.parametrize("lr", [0.1, "tensor"])
def test_a_capturable_or_single_tensor_lars_step_never_synchronises_with_the_host(path, case, lr):
    params = params_with_grads(case)
    opt = LARS(params, lr=torch.tensor(0.1, device="cuda") if lr == "tensor" else lr, **DEVICE_ONLY[path], **HYPER)
    opt.step()  # the first step creates the momentum buffers
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(p).all() for p in params)


@pytest.mark.parametrize("case", ["plain", "zero weight", "zero gradient"])
def test_the_default_step_which_reads_its_step_sizes_equals_the_capturable_one(case):
    default_params, capturable_params = params_with_grads(case), params_with_grads(case)
    default = LARS(default_params, lr=0.1, **HYPER)
    capturable = LARS(capturable_params, lr=0.1, capturable=True, **HYPER)
    for _ in range(3):
        default.step()
        capturable.step()
    for p, q in zip(capturable_params, default_params):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)


def test_a_default_lars_step_captured_in_a_cuda_graph_replays_as_the_eager_step():
    eager_params, graph_params = params_with_grads("plain"), params_with_grads("plain")
    lr = torch.tensor(0.1, device="cuda")
    eager, captured = LARS(eager_params, lr=0.1, **HYPER), LARS(graph_params, lr=lr, **HYPER)
    eager.step()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # the first step, which creates the momentum buffers, outside the graph
        captured.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # capturing: the step keeps its step sizes on the device by itself
        captured.step()
    for new_lr in (0.1, 0.05):
        lr.fill_(new_lr)
        eager.param_groups[0]["lr"] = new_lr
        graph.replay()
        eager.step()
    for p, q in zip(eager_params, graph_params):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).cuda()


@pytest.mark.parametrize("foreach", [False, True], ids=["single-tensor", "multi-tensor"])
def test_float16_with_grad_scaler_steps_on_unscaled_gradients_and_skips_inf(foreach):
    plain, scaled = small_model(), small_model()
    opt_plain = LARS(plain.parameters(), lr=0.5, foreach=foreach, **HYPER)
    opt_scaled = LARS(scaled.parameters(), lr=0.5, foreach=foreach, **HYPER)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 12)
    g = torch.Generator(device="cuda").manual_seed(1)
    for _ in range(3):
        x = torch.randn(16, 3, 8, 8, device="cuda", generator=g)
        y = torch.randint(0, 10, (16,), device="cuda", generator=g)
        with torch.autocast("cuda", torch.float16):
            loss_plain, loss_scaled = F.cross_entropy(plain(x), y), F.cross_entropy(scaled(x), y)
        loss_plain.backward()
        opt_plain.step()
        opt_plain.zero_grad()
        scaler.scale(loss_scaled).backward()
        scaler.step(opt_scaled)
        scaler.update()
        opt_scaled.zero_grad()
    for p, q in zip(plain.parameters(), scaled.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-4)  # the trust ratio saw unscaled gradients
    before = [p.detach().clone() for p in scaled.parameters()]
    momenta = [opt_scaled.state[p]["momentum_buffer"].clone() for p in scaled.parameters()]
    with torch.autocast("cuda", torch.float16):
        loss = F.cross_entropy(scaled(x), y) * float("inf")
    scaler.scale(loss).backward()
    scaler.step(opt_scaled)  # inf gradients: skipped
    scaler.update()
    for p, b, m in zip(scaled.parameters(), before, momenta):
        assert torch.equal(p.detach(), b) and torch.equal(opt_scaled.state[p]["momentum_buffer"], m)


@pytest.mark.parametrize("foreach", [None, False, True], ids=["default", "single-tensor", "multi-tensor"])
def test_the_compiled_step_matches_the_eager_step_on_cuda(foreach):
    eager_params, compiled_params = params_with_grads("plain"), params_with_grads("plain")
    eager = LARS(eager_params, lr=torch.tensor(0.1, device="cuda"), foreach=foreach, **HYPER)
    compiled = LARS(compiled_params, lr=torch.tensor(0.1, device="cuda"), foreach=foreach, **HYPER)
    torch._dynamo.reset()
    step = torch.compile(compiled.step)
    for _ in range(3):
        eager.step()
        step()
    for p, q in zip(eager_params, compiled_params):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


# --- the scripts on a GPU ------------------------------------------------------------------------

def test_train_py_with_cuda_graphs_trains_as_the_eager_run(gpu_run, cifar10_dir, tmp_path):
    """CUDA_GRAPHS: the same epochs as the uninterrupted eager run, to float16 round-off (not
    bit for bit: the compiled kernels round differently)."""
    result = run_script("train.py", *GPU_RUN, "--cuda_graphs=True", f"--data_dir={cifar10_dir}",
                        f"--checkpoint_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    eager = load_checkpoint(str(gpu_run / "withLars-256.pth"))["history"]
    graphs = load_checkpoint(str(tmp_path / "withLars-256.pth"))["history"]
    assert [r["epoch"] for r in graphs] == [r["epoch"] for r in eager]
    for e, g in zip(eager, graphs):
        assert g["train_loss"] == pytest.approx(e["train_loss"], rel=0.02), (e, g)


GPU_RUN = ["--model=resnet20", "--train_subset=2048", "--batch_size=256", "--num_epochs=3", "--warmup_epochs=1",
           "--amp=True", "--channels_last=True", "--deterministic=True", "--with_lars=True", "--device=cuda",
           "--num_threads=2"]


@pytest.fixture(scope="module")
def gpu_run(cifar10_dir, tmp_path_factory):
    """An uninterrupted AMP float16 run on the GPU: its checkpoint directory."""
    checkpoint_dir = tmp_path_factory.mktemp("gpu")
    result = run_script("train.py", *GPU_RUN, f"--data_dir={cifar10_dir}", f"--checkpoint_dir={checkpoint_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return checkpoint_dir


def test_train_py_on_a_gpu_resumes_exactly_and_val_py_reads_its_checkpoint_on_the_cpu(gpu_run, cifar10_dir, tmp_path):
    args = [*GPU_RUN, f"--data_dir={cifar10_dir}", f"--checkpoint_dir={tmp_path}"]
    process = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(process, str(tmp_path / "withLars-256.pth"), 1, 0.5)
    resumed = run_script("train.py", *args, "--resume=True")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = load_checkpoint(str(gpu_run / "withLars-256.pth"))
    got = load_checkpoint(str(tmp_path / "withLars-256.pth"))
    assert expected["machines"][-1]["device"].startswith("cuda") and expected["scaler"]["scale"] > 0
    assert [(r["test_acc"], r["train_loss"]) for r in got["history"]] == \
        [(r["test_acc"], r["train_loss"]) for r in expected["history"]]
    for name, tensor in expected["model"].items():
        assert torch.equal(got["model"][name], tensor), name
    shown = run_script("val.py", f"--checkpoint={gpu_run / 'withLars-256.pth'}", f"--data_dir={cifar10_dir}",
                       "--device=cpu")
    assert shown.returncode == 0, shown.stderr
    on_cpu = float(shown.stdout.strip().splitlines()[-1].split()[-1].rstrip("%"))
    assert abs(on_cpu - expected["history"][-1]["test_acc"]) < 1.0, "bf16 on the CPU against fp16 on the GPU"


@pytest.mark.parametrize("processes", [1, 2])
def test_torchrun_with_nccl_equals_the_single_process_run(gpu_run, cifar10_dir, tmp_path, processes):
    if processes > torch.cuda.device_count():
        pytest.skip(f"needs {processes} GPUs")
    micro = [] if processes == 1 else [f"--micro_batch_size={256 // processes}"]
    single = tmp_path / "single"
    if processes == 1:
        single = gpu_run
    else:
        result = run_script("train.py", *GPU_RUN, *micro, f"--data_dir={cifar10_dir}", f"--checkpoint_dir={single}")
        assert result.returncode == 0, result.stderr[-3000:]
    ddp = run_script("-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "train.py",
                     *GPU_RUN, f"--data_dir={cifar10_dir}", f"--checkpoint_dir={tmp_path / 'ddp'}")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    alone = load_checkpoint(str(single / "withLars-256.pth"))
    distributed = load_checkpoint(str(tmp_path / "ddp" / "withLars-256.pth"))
    assert distributed["machines"][-1]["processes"] == processes
    for name, tensor in alone["model"].items():
        if "running" in name or "num_batches" in name:
            continue
        torch.testing.assert_close(distributed["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)

