"""CUDA_GRAPHS on the CPU: the setting is refused where it cannot run, the eager path is the one it
always was, and the graph path's own parts (the LR as a tensor the schedule fills, the compiled
model and optimizer step, GradScaler's route to that step, a resume) run here with a compiler
backend that runs the captured graphs as they are, since CUDA graphs themselves need a GPU
(benchmarks/gpu_check.py measures them there)."""

import pytest
import torch

import trainer as trainer_module
from config import ConfigError, load_config, validate
from data import load_cifar10
from tests.conftest import make_image_folder, run_main
from trainer import Trainer, refuse_cuda_graphs_off_cuda
from utils import DeviceError, Process

ARGS = ["--model=resnet20", "--batch_size=16", "--num_epochs=2", "--warmup_epochs=1", "--num_threads=1",
        "--layer_stats_every=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_cifar10(make_image_folder(tmp_path_factory.mktemp("data"), per_class_train=32, per_class_test=4))


def make_trainer(data, tmp_path, *args):
    cfg = load_config([*ARGS, *args, f"--checkpoint_dir={tmp_path}"])
    return Trainer(cfg, Process(), torch.device("cpu"), data)


def is_compiled(function):
    return hasattr(function, "_torchdynamo_orig_callable")


class CountingBackend:
    """A torch.compile backend that runs each captured graph as traced and counts them."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


def test_cuda_graphs_is_refused_where_it_cannot_run():
    with pytest.raises(ConfigError, match="CUDA_GRAPHS = True is not allowed: must be False on the CPU"):
        validate(load_config(["--cuda_graphs=True", "--device=cpu"]), 1, ("resnet20",))
    with pytest.raises(ConfigError, match="and with several processes"):
        validate(load_config(["--cuda_graphs=True", "--device=cuda"]), 2, ("resnet20",))
    validate(load_config(["--cuda_graphs=True", "--device=cuda"]), 1, ("resnet50_imagenet",))
    with pytest.raises(DeviceError, match="CUDA_GRAPHS = True needs a CUDA device, and this run is on cpu"):
        refuse_cuda_graphs_off_cuda(load_config(["--cuda_graphs=True"]), torch.device("cpu"))
    refuse_cuda_graphs_off_cuda(load_config([]), torch.device("cpu"))


def test_train_py_refuses_cuda_graphs_in_one_line_when_auto_finds_no_cuda(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status, _, stderr = run_main("train.py", "--cuda_graphs=True", "--device=auto", f"--data_dir={tmp_path / 'none'}",
                                 f"--checkpoint_dir={tmp_path / 'run'}", capsys=capsys)
    assert status == 2 and stderr.strip() == ("error: CUDA_GRAPHS = True needs a CUDA device, and this run is on "
                                              "cpu; set --cuda_graphs=False")
    assert not (tmp_path / "run").exists()


def test_without_cuda_graphs_the_trainer_runs_the_model_and_the_optimizer_as_they_are(data, tmp_path):
    trainer = make_trainer(data, tmp_path, "--with_lars=True")
    assert trainer.network is trainer.model and not is_compiled(trainer.optimizer.step)
    assert all(isinstance(group["lr"], float) for group in trainer.optimizer.param_groups)


@pytest.mark.parametrize("with_lars", [False, True], ids=["SGD", "LARS"])
def test_the_graph_path_trains_as_the_eager_one_and_compiles_once_while_the_lr_changes(
        data, tmp_path, monkeypatch, with_lars):
    backend = CountingBackend()
    monkeypatch.setattr(trainer_module, "CUDA_GRAPH_COMPILE", {"backend": backend})
    torch._dynamo.reset()
    eager = make_trainer(data, tmp_path / "eager", f"--with_lars={with_lars}")
    graphs = make_trainer(data, tmp_path / "graphs", f"--with_lars={with_lars}", "--cuda_graphs=True")
    assert graphs.network is not graphs.model and is_compiled(graphs.optimizer.step)
    lrs, losses = [], []
    for step, (images, labels) in enumerate(eager.batches.train_epoch(0, 0, 16)):
        losses.append([t.train_step(images, labels).item() for t in (eager, graphs)])
        lrs.append([float(t.optimizer.param_groups[0]["lr"]) for t in (eager, graphs)])
        if step == 1:  # the first step creates the momentum buffers: the second traces another branch
            compiled = backend.graphs
    assert compiled > 0 and backend.graphs == compiled, "a new LR value compiled nothing again"
    assert len(set(lr for lr, _ in lrs)) == len(lrs) > 2, "the warm-up changed the LR at every step"
    for lr_eager, lr_graphs in lrs:
        assert lr_graphs == pytest.approx(lr_eager, rel=1e-6)  # float32 on the device
    for loss_eager, loss_graphs in losses:
        assert loss_graphs == pytest.approx(loss_eager, rel=1e-4)
    # Float32 round-off of the LR and of a reordered step, grown over six steps; a step that kept
    # the first LR would be off by about 1e-3.
    for (name, a), b in zip(eager.model.state_dict().items(), graphs.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=2e-4, msg=name)


def test_a_resumed_graph_run_keeps_its_lr_a_device_tensor_that_the_schedule_fills(data, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "CUDA_GRAPH_COMPILE", {"backend": CountingBackend()})
    torch._dynamo.reset()
    first = make_trainer(data, tmp_path, "--with_lars=True", "--cuda_graphs=True")
    first.run()
    resumed = make_trainer(data, tmp_path, "--with_lars=True", "--cuda_graphs=True")
    resumed.resume(first.state())
    lr = resumed.optimizer.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.item() == pytest.approx(float(first.optimizer.param_groups[0]["lr"]))
    resumed.scheduler.step()
    assert resumed.optimizer.param_groups[0]["lr"] is lr, "filled in place, not replaced"
