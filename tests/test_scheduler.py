"""Schedulers against their closed-form curves, across save/load, without PyTorch warnings."""

import io
import warnings

import pytest
import torch

from scheduler import GradualWarmupScheduler, MultiStepDecay, PolynomialLRDecay

BASE, MULT, WARMUP, DECAY, END, POWER = 0.1, 2.0, 6, 13, 1e-4, 2.0
MILESTONES, GAMMA = [3, 4, 11], 0.2  # steps after warm-up; 3 and 4 adjacent


def make(opt=None, after="poly"):
    opt = opt or torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE, momentum=0.9)
    if after == "poly":
        after_scheduler = PolynomialLRDecay(opt, DECAY, END, POWER)
    elif after == "step":
        after_scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.1)
    elif after == "multistep":
        after_scheduler = MultiStepDecay(opt, MILESTONES, GAMMA)
    else:
        after_scheduler = None
    return opt, GradualWarmupScheduler(opt, MULT, WARMUP, after_scheduler)


def closed_form(t, after="poly"):
    if t <= WARMUP:
        return BASE * (1 + (MULT - 1) * t / WARMUP)
    j = t - WARMUP
    if after == "poly":
        return (BASE * MULT - END) * (1 - min(j, DECAY) / DECAY) ** POWER + END
    if after == "step":
        return BASE * MULT * 0.1 ** (j // 4)
    if after == "multistep":
        return BASE * MULT * GAMMA ** len([m for m in MILESTONES if m <= j])
    return BASE * MULT


def lr_curve(opt, scheduler, steps):
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])  # the LR this optimizer step uses
        opt.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("after", ["poly", "step", "multistep", None])
def test_curve_matches_closed_form_without_warnings(after):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt, scheduler = make(after=after)
        lrs = lr_curve(opt, scheduler, WARMUP + DECAY + 5)
    expected = [closed_form(t, after) for t in range(len(lrs))]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_poly_reaches_end_lr_exactly_at_last_decay_step_then_holds():
    opt, scheduler = make()
    lrs = lr_curve(opt, scheduler, WARMUP + DECAY + 3)
    assert lrs[WARMUP] == pytest.approx(BASE * MULT)
    assert lrs[WARMUP + DECAY - 1] > END
    assert lrs[WARMUP + DECAY:] == pytest.approx([END] * 3)


def test_poly_alone_closed_form():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
    scheduler = PolynomialLRDecay(opt, 10, 0.01, power=1.0)
    assert lr_curve(opt, scheduler, 12) == pytest.approx([0.39 * (1 - t / 10) + 0.01 for t in range(11)] + [0.01])


@pytest.mark.parametrize("after", ["poly", "step", "multistep"])
@pytest.mark.parametrize("stop", [3, WARMUP, WARMUP + 4, WARMUP + 5])
def test_state_dict_round_trip_continues_the_curve(after, stop):
    opt, scheduler = make(after=after)
    lr_curve(opt, scheduler, stop)
    saved_opt, saved_sched = opt.state_dict(), scheduler.state_dict()
    buffer = io.BytesIO()
    torch.save(saved_sched, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == saved_sched  # plain values only
    # A new run: build as at the start, then restore (the order train.py uses).
    opt2, scheduler2 = make(after=after)
    opt2.load_state_dict(saved_opt)
    scheduler2.load_state_dict(saved_sched)
    rest = lr_curve(opt2, scheduler2, WARMUP + DECAY + 2 - stop)
    assert rest == pytest.approx([closed_form(t, after) for t in range(stop, WARMUP + DECAY + 2)], rel=1e-12)


def test_zero_warmup_starts_at_the_peak():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE)
    scheduler = GradualWarmupScheduler(opt, MULT, 0, PolynomialLRDecay(opt, 4, 0.0, 1.0))
    assert lr_curve(opt, scheduler, 5) == pytest.approx([0.2, 0.15, 0.1, 0.05, 0.0])


@pytest.mark.parametrize("kwargs, match", [
    ({"multiplier": 0.5, "total_epoch": 3}, "multiplier"),
    ({"multiplier": 2.0, "total_epoch": -1}, "total_epoch"),
])
def test_warmup_arguments_are_validated(kwargs, match):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE)
    with pytest.raises(ValueError, match=match):
        GradualWarmupScheduler(opt, **kwargs)


def test_poly_arguments_are_validated():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE)
    with pytest.raises(ValueError, match="max_decay_steps"):
        PolynomialLRDecay(opt, 0)


def test_multistep_alone_closed_form_and_its_arguments_are_validated():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = MultiStepDecay(opt, [2, 5], 0.1)
    assert lr_curve(opt, scheduler, 7) == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001], rel=1e-12)
    for milestones, gamma in [([5, 2], 0.1), ([0, 3], 0.1), ([2, 2], 0.1), ([2.5], 0.1), ([2], 1.5), ([2], 0.0)]:
        with pytest.raises(ValueError, match="MultiStepDecay"):
            MultiStepDecay(opt, milestones, gamma)
