"""Per-tensor layer statistics: their values against a direct computation, LARS's own trust
ratio, no effect on training, and what results.json keeps of them (a resumed run's are exact:
test_reliability.py)."""

import json

import pytest
import torch
import torch.nn.functional as F

import models
from config import load_config
from data import load_cifar10
from diagnostics import FIELDS, thinned
from lars import LARS
from tests.conftest import NoBatchNorm, make_image_folder, run_script
from trainer import Trainer
from checkpoints import load_checkpoint
from utils import Process


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_cifar10(make_image_folder(tmp_path_factory.mktemp("stats") / "data", per_class_train=16, per_class_test=4))


def trainer(data, monkeypatch, *overrides, scaler=False):
    monkeypatch.setitem(models.MODELS, "no_bn", NoBatchNorm)
    cfg = load_config(["--model=no_bn", "--batch_size=16", "--micro_batch_size=8", "--warmup_epochs=0",
                       "--num_epochs=2", "--amp=False", "--layer_stats_every=1", *overrides])
    t = Trainer(cfg, Process(), torch.device("cpu"), data)
    if scaler:  # a GradScaler as on CUDA: scaled gradients, unscaled by scaler.step or unscale_
        t.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    return t


@pytest.mark.parametrize("with_lars, scaler", [(False, False), (True, False), (True, True), (False, True)])
def test_recorded_values_equal_a_direct_computation(data, monkeypatch, with_lars, scaler):
    recorded = trainer(data, monkeypatch, f"--with_lars={with_lars}", scaler=scaler)
    images, labels = next(recorded.batches.train_epoch(0, 0, 16))
    weights = [p.detach().clone() for p in recorded.model.parameters()]
    recorded.train_step(images, labels, 0)
    recorded.stats.flush()
    stats = recorded.stats.records

    direct = trainer(data, monkeypatch, f"--with_lars={with_lars}")  # same seed: same initial weights
    for p, w in zip(direct.model.parameters(), weights):
        assert torch.equal(p.detach(), w)
    loss = F.cross_entropy(direct.model(images), labels)  # no batch norm: one batch = the micro-batches
    loss.backward()
    grads = [p.grad.clone() for p in direct.model.parameters()]
    cfg = direct.cfg
    direct.optimizer.step()
    assert stats["steps"] == [0] and stats["names"] == [n for n, _ in direct.model.named_parameters()]
    for j, (w, g, p) in enumerate(zip(weights, grads, direct.model.parameters())):
        w_norm, g_norm = w.norm().item(), g.norm().item()
        assert stats["w_norm"][0][j] == pytest.approx(w_norm, rel=1e-5)
        assert stats["g_norm"][0][j] == pytest.approx(g_norm, rel=1e-4), "the whole step's unscaled gradient"
        if with_lars:  # the paper's formula, written out here (1 for a zero tensor, as LARS has it)
            wd = cfg.LARS_WEIGHT_DECAY
            ratio = cfg.TRUST_COEF * w_norm / (g_norm + wd * w_norm) if w_norm > 0 else 1.0
            assert stats["trust_ratio"][0][j] == pytest.approx(ratio, rel=1e-4)
        else:
            assert stats["trust_ratio"][0][j] is None
        if w_norm > 0:
            update = (p.detach() - w).norm().item() / w_norm
            assert stats["update_ratio"][0][j] == pytest.approx(update, rel=1e-3)
        else:  # a zero-initialised bias has no relative update
            assert stats["update_ratio"][0][j] is None and (p.detach() - w).norm() > 0


def test_trust_ratios_are_the_ones_the_step_uses():
    torch.manual_seed(0)
    adapted, plain = torch.nn.Parameter(torch.randn(5, 4)), torch.nn.Parameter(torch.randn(4))
    opt = LARS([{"params": [adapted]}, {"params": [plain], "adapt": False}], lr=0.5, momentum=0.0,
               weight_decay=1e-3, trust_coef=0.02)
    adapted.grad, plain.grad = torch.randn(5, 4), torch.randn(4)
    ratios = opt.trust_ratios()
    assert set(ratios) == {"0.0"}, "without names: group and position; the unadapted group has none"
    before = adapted.detach().clone()
    opt.step()  # momentum 0: w -= lr * ratio * (g + wd * w)
    expected = before - 0.5 * ratios["0.0"] * (adapted.grad + 1e-3 * before)
    torch.testing.assert_close(adapted.detach(), expected)


@pytest.mark.parametrize("scaler", [False, True])
def test_recording_changes_nothing_else(data, monkeypatch, scaler):
    on = trainer(data, monkeypatch, "--with_lars=True", scaler=scaler)
    off = trainer(data, monkeypatch, "--with_lars=True", "--layer_stats_every=0", scaler=scaler)
    for t in (on, off):
        t.train_epoch()
        t.epoch += 1
        t.train_epoch()
    assert len(on.stats.records["steps"]) == 2 * on.steps_per_epoch and off.stats.records["steps"] == []
    for a, b in zip(on.model.parameters(), off.model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(on.optimizer.state.values(), off.optimizer.state.values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])


def test_results_keep_a_few_records_of_each_run_even_for_a_long_resnet50_sweep():
    names = [f"layer{i}.weight" for i in range(161)]  # torchvision's ResNet-50 has 161 tensors
    records = {"names": names, "ndims": [4] * 161, "steps": list(range(0, 200 * 390, 50))}
    for field in FIELDS:
        records[field] = [[0.123456789 * (1 + i % 7)] * 161 for i in range(len(records["steps"]))]
    kept = thinned(records)
    assert len(kept["steps"]) == 16 and kept["steps"][0] == 0 and kept["steps"][-1] == records["steps"][-1]
    assert kept["w_norm"][0][0] == 0.1235
    cells = [{"layer_stats": kept} for _ in range(14)]  # 14 cells of 200 epochs
    assert len(json.dumps({"cells": cells}, indent=1)) < 4e6


@pytest.mark.slow
def test_val_shows_the_tables_and_the_figure(tmp_path):
    folder = make_image_folder(tmp_path / "data", per_class_train=32, per_class_test=4)
    args = ["--model=resnet20", "--batch_size=16", "--num_epochs=3", "--warmup_epochs=0", "--with_lars=True",
            "--layer_stats_every=2", "--num_threads=1", f"--data_dir={folder}"]
    assert run_script("train.py", *args, f"--checkpoint_dir={tmp_path / 'a'}").returncode == 0
    whole = load_checkpoint(str(tmp_path / "a" / "withLars-16.pth"))["layer_stats"]
    assert whole["steps"] == [0, 2, 4, 6, 8, 10, 12, 14, 16]  # 6 steps an epoch: the first and every 2nd
    shown = run_script("val.py", *args, f"--checkpoint_dir={tmp_path / 'a'}", "--layers")
    assert shown.returncode == 0, shown.stderr
    assert "epoch 1, step 0:" in shown.stdout and "epoch 3, step 12:" in shown.stdout
    assert "| trust ratio | rel. update" in shown.stdout and "fc.weight" in shown.stdout
    assert (tmp_path / "a" / "withLars-16-layers.png").stat().st_size > 0


def test_trust_ratios_are_keyed_by_name_and_print_as_names_and_numbers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    named = list(model.named_parameters())
    opt = LARS([{"params": [(n, p) for n, p in named if p.ndim > 1]},
                {"params": [(n, p) for n, p in named if p.ndim == 1], "adapt": False}], lr=0.5, trust_coef=0.02)
    model(torch.randn(5, 4)).sum().backward()
    ratios = opt.trust_ratios()
    assert list(ratios) == ["0.weight", "1.weight"]
    printed = str(ratios)  # which layer and its value, not the weights
    assert "'0.weight': tensor(" in printed and "Parameter" not in printed and len(printed) < 80
    # a state dict saved without names (an older checkpoint) keeps the names the optimizer has
    # (torch.optim.Optimizer.load_state_dict does so)
    unnamed = LARS([{"params": [p for _, p in named if p.ndim > 1]},
                    {"params": [p for _, p in named if p.ndim == 1], "adapt": False}], lr=0.5, trust_coef=0.02)
    opt.load_state_dict(unnamed.state_dict())
    assert list(opt.trust_ratios()) == ["0.weight", "1.weight"]
