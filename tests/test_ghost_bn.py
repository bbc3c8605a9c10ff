"""Ghost batch norm against the micro-batch loop it replaces: the same loss, gradients, running
statistics and step, for ResNet-20 and ResNet-50."""

import copy

import pytest
import torch
import torch.nn.functional as F

from ghost_bn import GhostBatchNorm2d, use_ghost_batch_norm
from lars import LARS
from models import build_model


def micro_batch_loop(model, images, labels, size):
    """What Trainer.forward_backward does with MICRO_BATCH_SIZE = size: each micro-batch through
    the model on its own, its loss weighted by its share of the batch."""
    total = 0.0
    for x, y in zip(images.split(size), labels.split(size)):
        loss = F.cross_entropy(model(x), y) * (len(y) / len(labels))
        loss.backward()
        total += loss.item()
    return total


def one_pass(model, images, labels):
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    return loss.item()


@pytest.mark.parametrize("name, batch, size", [("resnet20", 32, 8),
                                               pytest.param("resnet50_imagenet", 16, 4, marks=pytest.mark.slow)])
def test_one_pass_matches_the_micro_batch_loop(name, batch, size):
    # in float64, so that what differs is the method, not the order of float32 round-off
    torch.manual_seed(0)
    sequential = build_model(name).double().train()
    ghost = use_ghost_batch_norm(copy.deepcopy(sequential), size)
    assert any(isinstance(m, GhostBatchNorm2d) for m in ghost.modules())
    images, labels = torch.randn(batch, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (batch,))
    optimizers = [LARS(m.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4, trust_coef=0.02)
                  for m in (sequential, ghost)]
    assert one_pass(ghost, images, labels) == pytest.approx(micro_batch_loop(sequential, images, labels, size), rel=1e-10)
    for (n, a), b in zip(sequential.named_parameters(), ghost.parameters()):  # to 1e-9 of each tensor's largest
        assert (b.grad - a.grad).abs().max() <= 1e-9 * a.grad.abs().max(), n
    for (n, a), b in zip(sequential.named_buffers(), ghost.buffers()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=n)  # running stats, as 4 or 8 updates made them
    before = [p.detach().clone() for p in sequential.parameters()]
    for optimizer in optimizers:
        optimizer.step()
    for (n, a), b, a0 in zip(sequential.named_parameters(), ghost.parameters(), before):  # to 1e-9 of the step
        assert (b - a).abs().max() <= 1e-9 * (a - a0).abs().max(), n
    sequential.eval(), ghost.eval()
    with torch.no_grad():
        torch.testing.assert_close(ghost(images), sequential(images), rtol=1e-8, atol=1e-10)


def test_under_bf16_autocast_statistics_are_float32_as_batch_norms_are():
    torch.manual_seed(0)
    sequential = build_model("resnet20").train()
    ghost = use_ghost_batch_norm(copy.deepcopy(sequential), 8)
    images, labels = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    with torch.autocast("cpu", torch.bfloat16):
        a = micro_batch_loop(sequential, images, labels, 8)
        b = one_pass(ghost, images, labels)
    assert b == pytest.approx(a, rel=2e-2)  # bf16 convolutions either way; the statistics in float32
    for (n, x), y in zip(sequential.named_buffers(), ghost.buffers()):
        torch.testing.assert_close(y, x, rtol=2e-2, atol=2e-3, msg=n)


def test_precise_bns_cumulative_average_and_small_batches_are_batch_norms_own():
    torch.manual_seed(0)
    plain = torch.nn.BatchNorm2d(3)
    ghost = use_ghost_batch_norm(copy.deepcopy(plain), 4)
    for bn in (plain, ghost):
        bn.reset_running_stats()
        bn.momentum = None  # precise BN: the average over the batches seen
    x = torch.randn(12, 3, 5, 5) * 3 + 1
    for chunk in x.split(4):
        plain(chunk)
    ghost(x)
    torch.testing.assert_close(ghost.running_mean, plain.running_mean)
    torch.testing.assert_close(ghost.running_var, plain.running_var)
    assert ghost.num_batches_tracked.item() == plain.num_batches_tracked.item() == 3
    small = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(ghost(small), plain(small))  # one group: nn.BatchNorm2d itself
    with pytest.raises(ValueError, match="whole number of groups"):
        ghost(torch.randn(6, 3, 5, 5))
    assert set(ghost.state_dict()) == set(plain.state_dict()), "checkpoints are unchanged"


def test_train_py_takes_the_micro_batches_statistics_in_one_pass_with_ghost_bn(tmp_path):
    from config import load_config
    from data import load_cifar10
    from tests.conftest import make_image_folder
    from trainer import Trainer
    from utils import Process

    data = load_cifar10(make_image_folder(tmp_path / "data", per_class_train=16, per_class_test=4))
    trainers = {}
    for ghost in (False, True):
        cfg = load_config(["--model=resnet20", "--batch_size=32", "--micro_batch_size=8", "--warmup_epochs=0",
                           "--num_epochs=1", "--with_lars=True", f"--ghost_bn={ghost}", "--num_threads=1",
                           # NCHW: on the CPU, torch's channels-last batch norm at 8 images a pass is itself
                           # 0.5 % off a float64 reference in its gradients (ghost BN: 3e-6, like NCHW)
                           "--channels_last=False",
                           f"--checkpoint_dir={tmp_path / str(ghost)}"])
        trainers[ghost] = Trainer(cfg, Process(), torch.device("cpu"), data)
    assert (trainers[True].ghost_bn, trainers[True].pass_size) == (True, 32)
    assert (trainers[False].ghost_bn, trainers[False].pass_size) == (False, 8)
    images, labels = next(trainers[False].batches.train_epoch(0, 0, 32))
    losses = [trainers[g].train_step(images, labels).item() for g in (False, True)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for (n, a), b in zip(trainers[False].model.state_dict().items(), trainers[True].model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=n)  # weights after the step, BN statistics


def test_ghost_bn_resolves_to_cuda_only_by_default_and_refuses_what_it_cannot_do():
    from config import ConfigError, load_config, validate
    from trainer import uses_ghost_bn

    cfg = load_config(["--batch_size=8192", "--micro_batch_size=128"])
    assert not uses_ghost_bn(cfg, torch.device("cpu"), 8192) and uses_ghost_bn(cfg, torch.device("cuda"), 8192)
    assert not uses_ghost_bn(load_config(["--batch_size=128"]), torch.device("cuda"), 128), "no micro-batches"
    assert uses_ghost_bn(load_config(["--batch_size=8192", "--micro_batch_size=128", "--ghost_bn=True"]),
                         torch.device("cpu"), 8192)
    with pytest.raises(ConfigError, match="GHOST_BN = True is not allowed: must be True only with micro-batches"):
        validate(load_config(["--ghost_bn=True"]), 1, ("resnet50_imagenet",))
